"""Customer value in PostgreSQL: order totals read from ``events``, and the computed values kept per customer.

An order is an event named the configured order event (``PARCOURS_ORDER_EVENT``); its value is the numeric
property at ``value_path`` (``PARCOURS_ORDER_VALUE_PROPERTY``, dotted for a nested one). A missing, non-numeric
or negative value counts as an order worth 0. Profiles merged into another are skipped: their events moved to the
customer they merged into.

``customer_values`` holds what the last refresh computed (``workflows/customer_values.py``), apart from the
customer's attributes. ``values_sql`` is the one JSON form of a row: the profile (``store.customers``), segment
conditions (``store.segments``) and the API all read it, so a condition sees exactly what a template shows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.customer_values import VALUE_FIELDS
from store.db import Db, transaction


def _iso(column: str) -> str:
    # Fixed-width ISO 8601 in UTC, whatever the session's time zone: string comparisons order it by time.
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""


def values_sql(customer_id: str) -> str:
    """A jsonb object of the customer's computed values (NULL when none), for the customer id SQL expression."""
    fields = ", ".join(
        f"'{name}', {_iso('v.' + name) if name.endswith('_at') else 'v.' + name}" for name in VALUE_FIELDS
    )
    return f"(SELECT jsonb_build_object({fields}) FROM customer_values v WHERE v.customer_id = {customer_id})"


def _value(path: str) -> str:
    """The order's value (SQL, on events row ``e``) at the text[] parameter ``path``."""
    v = f"(e.properties #> {path})"
    return f"(CASE WHEN jsonb_typeof({v}) = 'number' THEN greatest(({v} #>> '{{}}')::double precision, 0) ELSE 0 END)"


def _totals(path: str) -> str:
    return (
        f"count(*)::int AS orders, sum({_value(path)}) AS revenue, min(e.occurred_at) AS first_order,"
        f" max(e.occurred_at) AS last_order,"
        f" (array_agg({_value(path)} ORDER BY e.occurred_at, e.event_id))[1] AS first_value"
    )


@dataclass(frozen=True)
class OrderTotals:
    """One customer's orders up to a moment: the columns ``measurement.clv.summary_from_totals`` takes."""

    customer: str
    orders: int
    revenue: float
    first_order: datetime
    last_order: datetime
    first_value: float

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.customer, self.orders, self.revenue, self.first_order, self.last_order, self.first_value)


def _row(record: Any) -> OrderTotals:
    return OrderTotals(
        customer=record["customer"],
        orders=int(record["orders"]),
        revenue=float(record["revenue"]),
        first_order=record["first_order"],
        last_order=record["last_order"],
        first_value=float(record["first_value"]),
    )


async def all_order_totals(
    db: Db, order_event: str, value_path: list[str], as_of: datetime, *, chunk: int = 5000
) -> AsyncIterator[list[OrderTotals]]:
    """Every customer's order totals up to ``as_of``, in chunks (a server-side cursor in one snapshot)."""
    sql = f"""SELECT e.customer_id AS customer, {_totals("$2::text[]")}
                FROM events e JOIN customers c ON c.id = e.customer_id AND c.merged_into IS NULL
               WHERE e.name = $1 AND e.occurred_at <= $3
               GROUP BY e.customer_id"""
    async with transaction(db, isolation="repeatable_read", readonly=True) as conn:
        cursor = await conn.cursor(sql, order_event, value_path, as_of)
        while True:
            rows = await cursor.fetch(chunk)
            if not rows:
                return
            yield [_row(r) for r in rows]


async def customer_page(db: Db, *, after: str | None, limit: int) -> list[str]:
    """Ids of customers (not merged into another) after ``after``, at most ``limit``, in order."""
    rows = await db.fetch(
        "SELECT id FROM customers WHERE id > $1 AND merged_into IS NULL ORDER BY id LIMIT $2", after or "", limit
    )
    return [r["id"] for r in rows]


async def order_totals(
    db: Db, customer_ids: list[str], order_event: str, value_path: list[str], as_of: datetime
) -> list[OrderTotals]:
    """The order totals up to ``as_of`` of those of ``customer_ids`` who ordered, by customer id."""
    sql = f"""SELECT e.customer_id AS customer, {_totals("$2::text[]")}
                FROM events e
               WHERE e.customer_id = ANY($4::text[]) AND e.name = $1 AND e.occurred_at <= $3
               GROUP BY e.customer_id ORDER BY e.customer_id"""
    return [_row(r) for r in await db.fetch(sql, order_event, value_path, as_of, customer_ids)]


@dataclass(frozen=True)
class ComputedValue:
    """What a refresh writes for one customer."""

    customer_id: str
    orders_count: int
    revenue: float
    first_order_at: datetime
    last_order_at: datetime
    average_order_value: float
    clv: float
    clv_model: str
    expected_orders: float
    probability_alive: float | None


async def write_values(db: Db, values: list[ComputedValue], *, refresh_id: str, computed_at: datetime) -> int:
    """Upsert the computed values (customers erased or merged meanwhile are skipped); returns rows written."""
    if not values:
        return 0
    columns = [
        [getattr(v, name) for v in values]
        for name in (
            "customer_id", "orders_count", "revenue", "first_order_at", "last_order_at", "average_order_value",
            "clv", "clv_model", "expected_orders", "probability_alive",
        )
    ]  # fmt: skip
    status = await db.execute(
        """INSERT INTO customer_values (customer_id, orders_count, revenue, first_order_at, last_order_at,
                   average_order_value, clv, clv_model, expected_orders, probability_alive, computed_at, refresh_id)
           SELECT u.*, $11, $12
             FROM unnest($1::text[], $2::int[], $3::float8[], $4::timestamptz[], $5::timestamptz[], $6::float8[],
                         $7::float8[], $8::text[], $9::float8[], $10::float8[])
                  AS u(customer_id, orders_count, revenue, first_order_at, last_order_at, average_order_value, clv,
                       clv_model, expected_orders, probability_alive)
             JOIN customers c ON c.id = u.customer_id AND c.merged_into IS NULL
           ON CONFLICT (customer_id) DO UPDATE SET
               orders_count = EXCLUDED.orders_count, revenue = EXCLUDED.revenue,
               first_order_at = EXCLUDED.first_order_at, last_order_at = EXCLUDED.last_order_at,
               average_order_value = EXCLUDED.average_order_value, clv = EXCLUDED.clv,
               clv_model = EXCLUDED.clv_model, expected_orders = EXCLUDED.expected_orders,
               probability_alive = EXCLUDED.probability_alive, computed_at = EXCLUDED.computed_at,
               refresh_id = EXCLUDED.refresh_id""",
        *columns,
        computed_at,
        refresh_id,
    )
    return int(status.rsplit(" ", 1)[-1])


async def prune(db: Db, refresh_id: str) -> int:
    """Remove the rows the finished refresh ``refresh_id`` did not write (customers without orders now)."""
    status = await db.execute("DELETE FROM customer_values WHERE refresh_id <> $1", refresh_id)
    return int(status.rsplit(" ", 1)[-1])


async def forget(db: Db, customer_id: str) -> int:
    """Remove the customer's computed values (a profile merged into another: recomputed for the customer at the
    next refresh)."""
    status = await db.execute("DELETE FROM customer_values WHERE customer_id = $1", customer_id)
    return int(status.rsplit(" ", 1)[-1])


async def values_of(db: Db, customer_id: str) -> dict[str, Any] | None:
    """The customer's computed values as profiles see them (``VALUE_FIELDS``), or None."""
    row = await db.fetchval(f"SELECT {values_sql('$1::text')}", customer_id)
    return _json(row)


def _json(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):  # a connection without the pool's jsonb codec
        return dict(json.loads(value))
    return dict(value)
