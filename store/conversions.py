"""Conversions: a journey's goal reached, at most once per entry of a customer into the journey.

A value is stored as the decimal the customer saw (``49.9``, never the binary float ``49.899999...``), so revenue
sums are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from store.db import Db

_INSERT_SQL = """
INSERT INTO conversions (journey_id, journey_version, customer_id, entry_id, event_id, event_name,
                         value, variant, variants, last_message_key, converted_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (journey_id, customer_id, entry_id) DO NOTHING
"""


@dataclass(frozen=True)
class Conversion:
    """The goal event of one entry, with what the journey credits it to."""

    journey_id: str
    journey_version: int
    customer_id: str
    entry_id: str
    event_id: str
    event_name: str
    value: float | None
    variant: str | None
    """The A/B variant the customer was in, if any."""
    last_message_key: str | None
    """The idempotency key of the last message sent before the goal (last-touch attribution)."""
    converted_at: datetime
    variants: dict[str, str] | None = None
    """Every split step's variant by step id (``variant`` is the last one); None when the run did not keep them."""


def exact(value: float | None) -> Decimal | None:
    """The decimal a float stands for (its shortest repr), for a ``numeric`` column: 49.9 stays 49.9."""
    if value is None:
        return None
    return Decimal(repr(float(value)))


async def record_conversion(db: Db, conversion: Conversion) -> bool:
    """Record the conversion; False when the entry had converted already (the first one stands)."""
    status = await db.execute(
        _INSERT_SQL,
        conversion.journey_id,
        conversion.journey_version,
        conversion.customer_id,
        conversion.entry_id,
        conversion.event_id,
        conversion.event_name,
        exact(conversion.value),
        conversion.variant,
        conversion.variants,
        conversion.last_message_key,
        conversion.converted_at,
    )
    return status == "INSERT 0 1"
