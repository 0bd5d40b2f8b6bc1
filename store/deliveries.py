"""Per-device deliveries of a push: which device of the customer has a message, and which still needs it.

A push goes to every active device. Each device's answer is recorded here (``record``) as soon as it is known, in
its own statement on the pool, not in the send's transaction: a transient failure of one device rolls that
transaction back and Temporal retries the send, and the retry must know which devices already have the message so
it delivers only to the others (``activities.channels.push`` says when the push counts as sent).

Rows are keyed by the message's idempotency key and the device id; ``attempts`` counts the deliveries tried to that
device. A ``sent`` row is final: a later answer never overwrites it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from store.db import Db

Status = Literal["sent", "pending", "gave_up", "failed", "dead"]
"""``sent``: the provider took it. ``pending``: failed transiently, the next attempt tries again. ``gave_up``:
failed transiently as many times as allowed. ``failed``: refused for good. ``dead``: the token is dead."""

_COLUMNS = (
    "idempotency_key, customer_id, device_id, platform, status, provider_id, error, attempts, created_at, updated_at"
)


@dataclass(frozen=True)
class Delivery:
    idempotency_key: str
    customer_id: str
    device_id: str
    platform: str
    status: Status
    provider_id: str | None
    error: dict[str, Any] | None
    attempts: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Answer:
    """One device's answer to one attempt."""

    device_id: str
    platform: str
    status: Literal["sent", "pending", "failed", "dead"]
    provider_id: str | None = None
    error: dict[str, Any] | None = None


async def deliveries_of(db: Db, idempotency_key: str) -> list[Delivery]:
    """What each device answered for this message so far, oldest first."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM message_deliveries WHERE idempotency_key = $1 ORDER BY created_at, device_id",
        idempotency_key,
    )
    return [Delivery(**dict(r)) for r in rows]


async def record(
    db: Db, idempotency_key: str, customer_id: str, answers: Sequence[Answer], *, max_attempts: int
) -> list[Delivery]:
    """Record one attempt's answers, one statement for all devices; the rows as they are now.

    Each answer adds one to the device's ``attempts``. A ``pending`` answer that reaches ``max_attempts`` is
    recorded ``gave_up``. A device already ``sent`` keeps its row as it is.
    """
    if not answers:
        return []
    rows = await db.fetch(
        f"""INSERT INTO message_deliveries AS d
                   (idempotency_key, customer_id, device_id, platform, status, provider_id, error, attempts)
            SELECT $1, $2, a.device_id, a.platform,
                   CASE WHEN a.status = 'pending' AND $8 <= 1 THEN 'gave_up' ELSE a.status END,
                   a.provider_id, a.error, 1
              FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])
                   AS a(device_id, platform, status, provider_id, error)
            ON CONFLICT (idempotency_key, device_id) DO UPDATE SET
                   status = CASE WHEN EXCLUDED.status = 'pending' AND d.attempts + 1 >= $8 THEN 'gave_up'
                                 ELSE EXCLUDED.status END,
                   provider_id = EXCLUDED.provider_id,
                   error = EXCLUDED.error,
                   platform = EXCLUDED.platform,
                   attempts = d.attempts + 1,
                   updated_at = now()
             WHERE d.status <> 'sent'
            RETURNING {_COLUMNS}""",
        idempotency_key,
        customer_id,
        [a.device_id for a in answers],
        [a.platform for a in answers],
        [a.status for a in answers],
        [a.provider_id for a in answers],
        [a.error for a in answers],
        max_attempts,
    )
    return [Delivery(**dict(r)) for r in rows]


async def deliveries_of_customer(db: Db, customer_id: str) -> list[dict[str, Any]]:
    """The customer's push deliveries, for the export."""
    rows = await db.fetch(
        """SELECT idempotency_key, device_id, platform, status, provider_id, attempts, created_at, updated_at
             FROM message_deliveries WHERE customer_id = $1 ORDER BY created_at, idempotency_key, device_id""",
        customer_id,
    )
    return [dict(r) for r in rows]
