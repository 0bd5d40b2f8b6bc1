"""Conversions (store.conversions): an entry converts once and the first conversion stands."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from store import conversions as conversion_store

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def conversion(customer: str, entry: str, **fields: object) -> conversion_store.Conversion:
    base = conversion_store.Conversion(
        journey_id="welcome",
        journey_version=2,
        customer_id=customer,
        entry_id=entry,
        event_id=uid("e"),
        event_name="purchased",
        value=49.5,
        variant="B",
        last_message_key="welcome:hello:1",
        converted_at=T0,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


async def test_an_entry_converts_once_and_the_first_conversion_stands(pool: asyncpg.Pool) -> None:
    customer, entry = uid("c"), uid("entry")
    first = conversion(customer, entry)
    assert await conversion_store.record_conversion(pool, first) is True
    assert await conversion_store.record_conversion(pool, conversion(customer, entry, value=5.0)) is False
    assert await conversion_store.record_conversion(pool, conversion(customer, uid("entry"), value=None)) is True

    rows = await pool.fetch(
        """SELECT entry_id, event_id, value, variant, last_message_key, converted_at FROM conversions
            WHERE customer_id = $1 ORDER BY value NULLS LAST""",
        customer,
    )
    assert [tuple(r) for r in rows] == [
        (entry, first.event_id, Decimal("49.5"), "B", "welcome:hello:1", T0),
        (rows[1]["entry_id"], rows[1]["event_id"], None, "B", "welcome:hello:1", T0),
    ]
    assert rows[1]["entry_id"] != entry


async def test_float_values_are_stored_as_the_decimal_written_so_revenue_sums_exactly(pool: asyncpg.Pool) -> None:
    customer = uid("c")
    values = [49.9, 0.1, 0.2, 19.99, 1e-7, 123456789.01]
    for value in values:
        await conversion_store.record_conversion(pool, conversion(customer, uid("entry"), value=value))

    stored = await pool.fetch("SELECT value FROM conversions WHERE customer_id = $1 ORDER BY value", customer)
    assert [r["value"] for r in stored] == sorted(Decimal(str(v)) for v in values)
    total = await pool.fetchval("SELECT sum(value) FROM conversions WHERE customer_id = $1", customer)
    assert total == Decimal("123456859.2000001")


async def test_every_split_assignment_is_kept_with_the_conversion(pool: asyncpg.Pool) -> None:
    customer = uid("c")
    assignments = {"subject": "B", "offer": "ten_percent"}
    await conversion_store.record_conversion(pool, conversion(customer, uid("entry"), variants=assignments))
    await conversion_store.record_conversion(pool, conversion(customer, uid("entry"), value=1.0))

    rows = await pool.fetch("SELECT variants FROM conversions WHERE customer_id = $1 ORDER BY value DESC", customer)
    assert [r["variants"] for r in rows] == [assignments, None]
