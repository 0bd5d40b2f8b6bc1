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
