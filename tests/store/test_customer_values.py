"""Computed customer values in PostgreSQL: kept apart from attributes, seen by profiles and segments alike, erased
with the customer and dropped from a profile merged into another."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from activities.profiles import fetch_profile
from journeys.conditions import ConditionGroup
from store import customer_values as value_store
from store import customers as customer_store
from store import privacy
from store import segments as segment_store
from store.identity import Link, identify

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def computed(customer_id: str, orders: int, revenue: float, clv: float) -> value_store.ComputedValue:
    return value_store.ComputedValue(
        customer_id=customer_id,
        orders_count=orders,
        revenue=revenue,
        first_order_at=NOW - timedelta(days=90),
        last_order_at=NOW - timedelta(days=3),
        average_order_value=revenue / orders,
        clv=clv,
        clv_model="historical_rate",
        expected_orders=1.5,
        probability_alive=None,
    )


async def customers_with_values(
    pool: asyncpg.Pool, *rows: tuple[int, float, float] | None, **attrs: object
) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    ids = []
    for i, row in enumerate(rows):
        customer_id = f"cv-{tag}-{i}"
        await customer_store.upsert_customer(pool, customer_id, email=f"{customer_id}@example.com", attributes=attrs)
        if row is not None:
            await value_store.write_values(pool, [computed(customer_id, *row)], refresh_id="test", computed_at=NOW)
        ids.append(customer_id)
    return ids


async def test_a_segment_on_clv_selects_the_customers_a_branch_would(pool: asyncpg.Pool) -> None:
    # An attribute named clv (the customer's own data) never counts as the computed value.
    ids = await customers_with_values(pool, (3, 300.0, 450.0), (1, 40.0, 60.0), None, (2, 200.0, 150.01), clv=999)
    high, low, none, edge = ids
    conditions = [
        {"field": "profile.clv", "op": "gt", "value": 150},
        {"any": [{"field": "profile.clv", "op": "lt", "value": 100}, {"field": "profile.clv", "op": "not_exists"}]},
        {"field": "profile.orders_count", "op": "gte", "value": 2},
        {"field": "profile.attributes.clv", "op": "eq", "value": 999},
        {"field": "profile.clv_model", "op": "eq", "value": "historical_rate"},
        {"field": "profile.last_order_at", "op": "gt", "value": (NOW - timedelta(days=4)).isoformat()},
    ]
    expected = [{high, edge}, {low, none}, {high, edge}, set(ids), {high, low, edge}, {high, low, edge}]
    profiles = {c: (await fetch_profile(pool, c)).as_condition_data() for c in ids}
    for raw, want in zip(conditions, expected, strict=True):
        group = ConditionGroup.model_validate([raw])
        p = segment_store.Params(ids)
        sql = segment_store.condition_sql(group, segment_store.profile_value(p), p)
        rows = await pool.fetch(f"SELECT c.id FROM customers c WHERE c.id = ANY($1) AND {sql}", *p.values)
        assert {r["id"] for r in rows} == want, raw
        assert {c for c, data in profiles.items() if group.evaluate({"profile": data})} == want, raw


async def test_a_profile_write_never_changes_the_computed_values(pool: asyncpg.Pool) -> None:
    (customer_id,) = await customers_with_values(pool, (4, 400.0, 520.5))
    written = await customer_store.upsert_customer(pool, customer_id, attributes={"clv": 1, "orders_count": 0})
    assert written.values is not None and written.values["clv"] == 520.5
    customer = await customer_store.get_customer(pool, customer_id)
    assert customer is not None and customer.attributes["clv"] == 1
    assert customer.values is not None
    assert (customer.values["clv"], customer.values["orders_count"]) == (520.5, 4)
    data = (await fetch_profile(pool, customer_id)).as_condition_data()
    assert (data["clv"], data["orders_count"], data["attributes"]["clv"]) == (520.5, 4, 1)
    assert data["first_order_at"] == (NOW - timedelta(days=90)).isoformat(timespec="microseconds")


async def test_values_are_exported_erased_with_the_customer_and_dropped_on_merge(pool: asyncpg.Pool) -> None:
    kept, erased, merged = await customers_with_values(pool, (2, 80.0, 90.0), (1, 10.0, 12.0), (5, 50.0, 70.0))
    export = await privacy.export_customer(pool, kept)
    assert export is not None and export["values"]["orders_count"] == 2

    result = await privacy.erase_customer(pool, erased, b"secret", requested_at=NOW, complete=True)
    assert result["this_request"]["customer_values"] == 1
    assert await value_store.values_of(pool, erased) is None

    await identify(pool, kept, [Link("customer_id", merged, "customer_ids[0]")])
    assert await value_store.values_of(pool, merged) is None
    # The customer keeps theirs until the next refresh counts the merged orders.
    assert (await value_store.values_of(pool, kept) or {})["orders_count"] == 2
