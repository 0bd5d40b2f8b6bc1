"""The message log: one row per send decision, keyed by the send's idempotency key.

A row records what became of one send step for one customer (``sent``, ``skipped`` or ``failed``) with the
recipient, the rendered content and the provider's answer. The key is unique: the first decision recorded for it
stands, and a retried or replayed send finds it (``message_status``) instead of messaging the customer again.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, NamedTuple

from store.db import Db

# Parameters in the field order of NewMessage; ``sent_at`` is stamped when the row says sent.
_INSERT_SQL = """
INSERT INTO messages (idempotency_key, journey_id, journey_version, step_id, customer_id, entry_id, channel,
                      topic, kind, status, reason, recipient, rendered, provider_message_id, provider_response,
                      error, attempts, sent_at, decided_at, choice)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
        CASE WHEN $10 = 'sent' THEN clock_timestamp() END, $18, $19)
ON CONFLICT (idempotency_key) DO NOTHING
"""


@dataclass(frozen=True)
class NewMessage:
    """A send decision to record (field order is the statement's parameter order)."""

    idempotency_key: str
    journey_id: str
    journey_version: int
    step_id: str
    customer_id: str
    entry_id: str
    channel: str
    topic: str | None
    kind: str
    status: str
    reason: str | None
    recipient: str | None
    rendered: dict[str, Any] | None
    provider_message_id: str | None
    provider_response: dict[str, Any] | None
    error: str | None
    attempts: int
    decided_at: datetime
    """The moment of the decision on the journey's clock (frequency caps count by it)."""
    choice: dict[str, Any] | None
    """How the channel was chosen: the order, why, which channels were refused, which failed."""


@dataclass(frozen=True)
class MessageStatus:
    """What was recorded for a key."""

    status: str
    reason: str | None
    channel: str
    provider_message_id: str | None


class SentMessage(NamedTuple):
    """A marketing message sent to the customer, for frequency caps."""

    channel: str
    decided_at: datetime


@dataclass(frozen=True)
class MessageSummary:
    """One line of a customer's recent messages."""

    created_at: datetime
    journey_id: str
    step_id: str
    channel: str
    status: str
    reason: str | None
    rendered: dict[str, Any] | None


async def insert_message(db: Db, message: NewMessage) -> bool:
    """Record ``message`` unless its key is recorded already; True when this call recorded it."""
    status = await db.execute(_INSERT_SQL, *(getattr(message, f.name) for f in fields(message)))
    return status == "INSERT 0 1"


async def message_status(db: Db, idempotency_key: str) -> MessageStatus | None:
    """What was recorded for the key, or None. Inside the send's transaction it sees what committed before the
    customer's row lock was granted."""
    row = await db.fetchrow(
        "SELECT status, reason, channel, provider_message_id FROM messages WHERE idempotency_key = $1",
        idempotency_key,
    )
    return MessageStatus(**dict(row)) if row is not None else None


async def marketing_sent_since(db: Db, customer_id: str, since: datetime) -> list[SentMessage]:
    """The customer's marketing messages sent and decided after ``since`` (journey clock), in no order."""
    rows = await db.fetch(
        """
        SELECT channel, decided_at FROM messages
         WHERE customer_id = $1 AND kind = 'marketing' AND status = 'sent'
           AND decided_at > $2
        """,
        customer_id,
        since,
    )
    return [SentMessage(r["channel"], r["decided_at"]) for r in rows]


async def recent_messages(db: Db, customer_id: str, *, limit: int = 10) -> list[MessageSummary]:
    """The customer's newest messages first."""
    rows = await db.fetch(
        """SELECT created_at, journey_id, step_id, channel, status, reason, rendered
             FROM messages WHERE customer_id = $1 ORDER BY created_at DESC LIMIT $2""",
        customer_id,
        limit,
    )
    return [MessageSummary(**dict(r)) for r in rows]
