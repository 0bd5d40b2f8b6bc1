"""The message log: one row per send decision, keyed by the send's idempotency key.

A row records what became of one send step for one customer (``sent``, ``skipped`` or ``failed``) with the
recipient, the rendered content and the provider's answer. The key is unique: the first decision recorded for it
stands, and a retried or replayed send finds it (``message_status``) instead of messaging the customer again.

A broadcast batch records a send it decided to make as ``pending`` before it delivers (outside any transaction),
then overwrites it with the outcome (``settle_messages``); a pending row counts against frequency caps as a sent
one does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, NamedTuple

from store.db import Db

# Parameters in the field order of NewMessage; ``sent_at`` is stamped when the row says sent.
_INSERT_SQL = """
INSERT INTO messages (idempotency_key, journey_id, journey_version, step_id, customer_id, entry_id, channel,
                      topic, kind, status, reason, recipient, rendered, provider_message_id, provider_response,
                      error, attempts, sent_at, decided_at, choice, segments, encoding, cost, run_id,
                      earlier_attempts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
        CASE WHEN $10 = 'sent' THEN clock_timestamp() END, $18, $19, $20, $21, $22, $23, $24)
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
    segments: int | None = None
    """SMS: how many segments the text takes (``activities.channels.sms_encoding``)."""
    encoding: str | None = None
    """SMS: ``GSM-7`` or ``UCS-2``."""
    cost: float | None = None
    """What sending cost, where the channel says (SMS: per-segment cost times segments)."""
    run_id: str | None = None
    """The workflow run that decided it (a later run may retry a failed message: ``supersede_failed``)."""
    earlier_attempts: list[dict[str, Any]] = field(default_factory=list)
    """The failed attempts of earlier runs this one replaces, oldest first."""


@dataclass(frozen=True)
class MessageStatus:
    """What was recorded for a key."""

    status: str
    reason: str | None
    channel: str
    provider_message_id: str | None
    attempts: int = 0
    """For a ``pending`` row (a batch decided it and is delivering it): how many deliveries of it were begun."""
    run_id: str | None = None
    """The workflow run that recorded it (None: before migration 0018, or not a journey's send)."""

    def retried_by(self, run_id: str | None) -> bool:
        """Whether a send of ``run_id`` tries this message again: it failed, in another run (a reset re-ran it)."""
        return self.status == "failed" and run_id is not None and self.run_id != run_id


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


_UNNEST_SQL = """
  FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
              $9::text[], $10::text[], $11::text[], $12::text[], $13::jsonb[], $14::text[], $15::jsonb[],
              $16::text[], $17::int[], $18::timestamptz[], $19::jsonb[], $20::int[], $21::text[], $22::numeric[],
              $23::text[], $24::text[])
       AS m(idempotency_key, journey_id, journey_version, step_id, customer_id, entry_id, channel, topic, kind,
            status, reason, recipient, rendered, provider_message_id, provider_response, error, attempts,
            decided_at, choice, segments, encoding, cost, run_id, earlier_attempts)
"""
"""The rows of ``_columns(messages)``, one per message, as ``m``."""

_INSERT_MANY_SQL = (
    """
INSERT INTO messages (idempotency_key, journey_id, journey_version, step_id, customer_id, entry_id, channel,
                      topic, kind, status, reason, recipient, rendered, provider_message_id, provider_response,
                      error, attempts, sent_at, decided_at, choice, segments, encoding, cost, run_id,
                      earlier_attempts)
SELECT m.idempotency_key, m.journey_id, m.journey_version, m.step_id, m.customer_id, m.entry_id, m.channel,
       m.topic, m.kind, m.status, m.reason, m.recipient, m.rendered, m.provider_message_id, m.provider_response,
       m.error, m.attempts, CASE WHEN m.status = 'sent' THEN clock_timestamp() END, m.decided_at, m.choice,
       m.segments, m.encoding, m.cost, m.run_id, m.earlier_attempts::jsonb
"""
    + _UNNEST_SQL
    + """ON CONFLICT (idempotency_key) DO NOTHING
"""
)


async def insert_messages(db: Db, messages: Sequence[NewMessage]) -> int:
    """Record many messages in one statement (``insert_message`` for each, keys already recorded left alone);
    how many rows this call recorded."""
    if not messages:
        return 0
    status = await db.execute(_INSERT_MANY_SQL, *_columns(messages))
    return int(status.rsplit(" ", 1)[-1])


def _columns(messages: Sequence[NewMessage]) -> list[list[Any]]:
    """The messages as one array per column for ``unnest``. ``earlier_attempts`` goes as JSON text: asyncpg would
    read a list of lists as a two-dimensional array, not as one JSON array per message."""
    return [
        [json.dumps(m.earlier_attempts) for m in messages]
        if f.name == "earlier_attempts"
        else [getattr(m, f.name) for m in messages]
        for f in fields(NewMessage)
    ]


async def message_statuses(db: Db, idempotency_keys: Sequence[str]) -> dict[str, MessageStatus]:
    """``message_status`` for many keys in one statement: the keys recorded, and what was recorded."""
    rows = await db.fetch(
        """SELECT idempotency_key, status, reason, channel, provider_message_id, attempts
             FROM messages WHERE idempotency_key = ANY($1::text[])""",
        list(idempotency_keys),
    )
    return {
        r["idempotency_key"]: MessageStatus(
            r["status"], r["reason"], r["channel"], r["provider_message_id"], r["attempts"]
        )
        for r in rows
    }


assert _INSERT_MANY_SQL.endswith("ON CONFLICT (idempotency_key) DO NOTHING\n")
_SETTLE_SQL = (
    _INSERT_MANY_SQL.removesuffix("ON CONFLICT (idempotency_key) DO NOTHING\n")
    + """ON CONFLICT (idempotency_key) DO UPDATE
   SET channel = EXCLUDED.channel, status = EXCLUDED.status, reason = EXCLUDED.reason,
       recipient = EXCLUDED.recipient, rendered = EXCLUDED.rendered,
       provider_message_id = EXCLUDED.provider_message_id, provider_response = EXCLUDED.provider_response,
       error = EXCLUDED.error, attempts = EXCLUDED.attempts, sent_at = EXCLUDED.sent_at, choice = EXCLUDED.choice,
       segments = EXCLUDED.segments, encoding = EXCLUDED.encoding, cost = EXCLUDED.cost, updated_at = now()
 WHERE messages.status = 'pending'
"""
)


async def settle_messages(db: Db, messages: Sequence[NewMessage]) -> int:
    """Record many messages in one statement as ``insert_messages`` does, except that a ``pending`` row of the
    same key is overwritten (a batch's decision, now delivered, failed or claimed again); a final row (sent,
    skipped, failed) is never changed. How many rows were written."""
    if not messages:
        return 0
    status = await db.execute(_SETTLE_SQL, *_columns(messages))
    return int(status.rsplit(" ", 1)[-1])


_OUTCOMES_SQL = (
    """
UPDATE messages AS t
   SET channel = m.channel, status = m.status, reason = m.reason, recipient = m.recipient, rendered = m.rendered,
       provider_message_id = m.provider_message_id, provider_response = m.provider_response, error = m.error,
       attempts = m.attempts, sent_at = CASE WHEN m.status = 'sent' THEN clock_timestamp() END, choice = m.choice,
       segments = m.segments, encoding = m.encoding, cost = m.cost, updated_at = now()
"""
    + _UNNEST_SQL
    + """ WHERE t.idempotency_key = m.idempotency_key AND t.status = 'pending'
"""
)


async def record_outcomes(db: Db, messages: Sequence[NewMessage]) -> int:
    """Overwrite the ``pending`` rows of these keys with what became of them; how many were. Never inserts: a
    pending row that is gone or changed meanwhile (the customer was erased: its key is a pseudonym's now) stays
    as it is, so no personal data comes back."""
    if not messages:
        return 0
    status = await db.execute(_OUTCOMES_SQL, *_columns(messages))
    return int(status.rsplit(" ", 1)[-1])


async def drop_pending(db: Db, idempotency_keys: Sequence[str]) -> int:
    """Delete the ``pending`` rows of these keys: sends a batch decided but knows it did not deliver (a transient
    failure, a pause), so a retry decides them afresh. Final rows are left alone."""
    if not idempotency_keys:
        return 0
    status = await db.execute(
        "DELETE FROM messages WHERE idempotency_key = ANY($1::text[]) AND status = 'pending'", list(idempotency_keys)
    )
    return int(status.rsplit(" ", 1)[-1])


async def marketing_sent_since_many(
    db: Db, customer_ids: Sequence[str], since: datetime, *, besides: Sequence[str] = ()
) -> dict[str, list[SentMessage]]:
    """``marketing_sent_since`` for many customers in one statement (a customer with none is absent).
    ``besides``: idempotency keys not to count (a batch's own pending rows, claimed again after a crash)."""
    rows = await db.fetch(
        """
        SELECT customer_id, channel, decided_at FROM messages
         WHERE customer_id = ANY($1::text[]) AND kind = 'marketing' AND status IN ('sent', 'pending')
           AND decided_at > $2 AND idempotency_key <> ALL($3::text[])
        """,
        list(customer_ids),
        since,
        list(besides),
    )
    out: dict[str, list[SentMessage]] = {}
    for r in rows:
        out.setdefault(r["customer_id"], []).append(SentMessage(r["channel"], r["decided_at"]))
    return out


async def message_status(db: Db, idempotency_key: str) -> MessageStatus | None:
    """What was recorded for the key, or None. Inside the send's transaction it sees what committed before the
    customer's row lock was granted."""
    row = await db.fetchrow(
        "SELECT status, reason, channel, provider_message_id, run_id FROM messages WHERE idempotency_key = $1",
        idempotency_key,
    )
    return MessageStatus(**dict(row)) if row is not None else None


_SUPERSEDE_FAILED_SQL = """
DELETE FROM messages
 WHERE idempotency_key = $1 AND status = 'failed' AND run_id IS DISTINCT FROM $2
RETURNING earlier_attempts || jsonb_build_array(jsonb_build_object(
    'run_id', run_id, 'status', status, 'reason', split_part(reason, ':', 1), 'channel', channel,
    'decided_at', decided_at, 'superseded_at', clock_timestamp()))
"""


async def supersede_failed(db: Db, idempotency_key: str, run_id: str) -> list[dict[str, Any]] | None:
    """Take the key's failed message of another run out of the way of ``run_id``'s new attempt; answers the
    attempts the new row carries in ``earlier_attempts`` (None: no such row; a sent one is never touched).

    The row is deleted (the report counts drop its failure) and its summary (run, reason code, channel, when: no
    recipient, content or provider text) goes on in the new attempt's row. Call it in the transaction that inserts
    the new attempt, under the customer's row lock.
    """
    earlier = await db.fetchval(_SUPERSEDE_FAILED_SQL, idempotency_key, run_id)
    return list(earlier) if earlier is not None else None


async def marketing_sent_since(
    db: Db, customer_id: str, since: datetime, *, besides: Sequence[str] = ()
) -> list[SentMessage]:
    """The customer's marketing messages sent and decided after ``since`` (journey clock), in no order.

    A ``pending`` message counts as sent: a broadcast batch decided it and is delivering it outside its
    transaction, so a send deciding meanwhile must see it against the caps. ``besides``: keys not to count."""
    rows = await db.fetch(
        """
        SELECT channel, decided_at FROM messages
         WHERE customer_id = $1 AND kind = 'marketing' AND status IN ('sent', 'pending')
           AND decided_at > $2 AND idempotency_key <> ALL($3::text[])
        """,
        customer_id,
        since,
        list(besides),
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


@dataclass(frozen=True)
class Receipt:
    """What a delivery receipt changed."""

    idempotency_key: str
    customer_id: str
    channel: str
    recipient: str | None
    status: str


# Provider statuses that are final: delivered, or failed for good.
DELIVERED_STATUSES = frozenset({"delivered", "read"})
FAILED_STATUSES = frozenset({"undelivered", "failed"})


async def record_receipt(db: Db, provider_message_id: str, status: str, *, error: str | None = None) -> Receipt | None:
    """Record a provider's status for the message it knows by ``provider_message_id``; None when it is not ours.

    ``delivered_at`` / ``failed_at`` are stamped the first time a delivered / failed status arrives; a later
    ``sent`` or ``queued`` (callbacks may arrive out of order) does not overwrite a final status.
    """
    row = await db.fetchrow(
        """UPDATE messages SET
               provider_status = CASE WHEN delivered_at IS NOT NULL OR failed_at IS NOT NULL
                                           THEN CASE WHEN $2 = ANY($4::text[]) OR $2 = ANY($5::text[])
                                                     THEN $2 ELSE provider_status END
                                      ELSE $2 END,
               provider_error = COALESCE($3, provider_error),
               delivered_at = CASE WHEN $2 = ANY($4::text[]) THEN COALESCE(delivered_at, clock_timestamp())
                                   ELSE delivered_at END,
               failed_at = CASE WHEN $2 = ANY($5::text[]) THEN COALESCE(failed_at, clock_timestamp())
                                ELSE failed_at END,
               updated_at = now()
         WHERE provider_message_id = $1
         RETURNING idempotency_key, customer_id, channel, recipient, provider_status""",
        provider_message_id,
        status,
        error,
        sorted(DELIVERED_STATUSES),
        sorted(FAILED_STATUSES),
    )
    if row is None:
        return None
    return Receipt(row["idempotency_key"], row["customer_id"], row["channel"], row["recipient"], row["provider_status"])


async def messages_with_choice(db: Db, customer_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The customer's newest messages first, with the send policy's channel decision (``choice``)."""
    rows = await db.fetch(
        """SELECT created_at, journey_id, step_id, channel, status, reason, choice
             FROM messages WHERE customer_id = $1 ORDER BY created_at DESC LIMIT $2""",
        customer_id,
        limit,
    )
    return [dict(r) for r in rows]
