"""Engagement per message: opens, clicks, and the bounce, complaint or unsubscribe a message caused.

Kept on the ``messages`` row (migration 0008), keyed by the message's idempotency key. Opens and clicks are
counted by the tracking routes (``api/routes_tracking.py``) in the statement that stores the
``email_opened``/``email_clicked`` event (``store_event``), and only when that event is new, so a retried request
counts once.
Bounces, complaints and unsubscribes are moments, not counters: the first report sets ``bounced_at`` (etc.) and a
repeated report changes nothing; ``summary`` counts the messages that have them.

A message that is not (or no longer) in ``messages`` gets nothing: its send has not committed yet, or its
customer was erased (the key was replaced by a pseudonym).
"""

from __future__ import annotations

from typing import Any, Literal

from contracts.journey import Event
from store.db import Connection, Db
from store.identity import SHARED_LOCKS_SQL, alias_of, lock_keys, normalise

Report = Literal["hard_bounce", "complaint", "unsubscribe"]
_REPORT_COLUMNS = {"hard_bounce": "bounced_at", "complaint": "complained_at", "unsubscribe": "unsubscribed_at"}

ENGAGEMENT_COLUMNS = (
    "opens",
    "human_opens",
    "first_opened_at",
    "first_human_opened_at",
    "clicks",
    "first_clicked_at",
    "bounced_at",
    "complained_at",
    "unsubscribed_at",
)


# Store the event if the message exists, under the customer its id resolves to (a merged profile's id stands for
# the customer it merged into), and count it on the message if it is new: one statement. $1 message key,
# $2..$5 the event, $6/$7 the alias the customer id is looked up under, $8 the fallback customer id.
_STORE_AND_COUNT_SQL = """
WITH message AS (
    SELECT 1 FROM messages WHERE idempotency_key = $1
), stored AS (
    INSERT INTO events (event_id, customer_id, name, properties, occurred_at)
    SELECT $2, COALESCE(ids.customer_id, $8), $3, $4, $5
      FROM message LEFT JOIN identities ids ON ids.kind = $6 AND ids.value = $7
    ON CONFLICT (event_id) DO NOTHING
    RETURNING customer_id
), counted AS (
    UPDATE messages SET {counts} WHERE idempotency_key = $1 AND EXISTS (SELECT 1 FROM stored)
)
SELECT customer_id FROM stored
"""
_CLICK_SQL = _STORE_AND_COUNT_SQL.format(
    counts="clicks = clicks + 1, first_clicked_at = COALESCE(first_clicked_at, $5)"
)
_OPEN_SQL = _STORE_AND_COUNT_SQL.format(
    counts="""opens = opens + 1,
              first_opened_at = COALESCE(first_opened_at, $5),
              human_opens = human_opens + CASE WHEN $9 THEN 0 ELSE 1 END,
              first_human_opened_at = CASE WHEN $9 THEN first_human_opened_at
                                           ELSE COALESCE(first_human_opened_at, $5) END"""
)


async def store_event(conn: Connection, event: Event, message_key: str, *, machine: bool | None = None) -> str | None:
    """Store a click event (``machine`` None) or an open event of a message, and count it on the message.

    Nothing happens when the event id is known already (the same click a moment ago) or there is no such message.
    Resolved like any event, under the shared alias lock (``store.events``). Returns the customer id it was
    stored under, or None when nothing was stored. ``conn``: a connection, not a pool.
    """
    kind, value = alias_of(event.customer_id)
    args: list[Any] = [
        message_key,
        event.event_id,
        event.name,
        event.properties,
        event.occurred_at,
        kind,
        normalise(kind, value),
        event.customer_id,
    ]
    sql = _CLICK_SQL if machine is None else _OPEN_SQL
    if machine is not None:
        args.append(machine)
    async with conn.transaction():
        await conn.execute(SHARED_LOCKS_SQL, lock_keys([(kind, value)]))
        customer_id: str | None = await conn.fetchval(sql, *args)
    return customer_id


async def record_report(
    db: Db, report: Report, *, message_key: str | None = None, message_id: str | None = None
) -> bool:
    """Mark the message a bounce, complaint or unsubscribe came from, named by its idempotency key or by the
    Message-ID it was sent with. True when a message was found (a repeated report changes nothing)."""
    column = _REPORT_COLUMNS[report]
    if message_key and message_key.strip():
        where, value = "idempotency_key = $1", message_key.strip()
    elif message_id and message_id.strip("<> "):
        bare = message_id.strip().strip("<>")
        # Stored as the header carries it, "<...>"; providers report it with or without the brackets.
        where, value = "provider_message_id = $1", f"<{bare}>"
    else:
        return False
    found = await db.fetchval(
        f"UPDATE messages SET {column} = COALESCE({column}, now()) WHERE {where} RETURNING true",
        value,
    )
    return bool(found)


async def message_engagement(db: Db, message_key: str) -> dict[str, Any] | None:
    """The engagement of one message (``ENGAGEMENT_COLUMNS``), or None when there is no such message."""
    row = await db.fetchrow(
        f"SELECT {', '.join(ENGAGEMENT_COLUMNS)} FROM messages WHERE idempotency_key = $1",
        message_key,
    )
    return dict(row) if row else None


async def summary(db: Db, journey_id: str) -> list[dict[str, Any]]:
    """Per send step and channel of a journey: messages sent, and how many were opened (by anyone, by a human),
    clicked, bounced, complained about, unsubscribed from; with the total opens and clicks."""
    rows = await db.fetch(
        """
        SELECT step_id, channel,
               count(*) AS sent,
               count(first_opened_at) AS opened,
               count(first_human_opened_at) AS opened_by_human,
               count(first_clicked_at) AS clicked,
               sum(opens)::bigint AS opens,
               sum(human_opens)::bigint AS human_opens,
               sum(clicks)::bigint AS clicks,
               count(bounced_at) AS bounces,
               count(complained_at) AS complaints,
               count(unsubscribed_at) AS unsubscribes
          FROM messages
         WHERE journey_id = $1 AND status = 'sent'
         GROUP BY step_id, channel
         ORDER BY step_id, channel
        """,
        journey_id,
    )
    return [dict(r) for r in rows]
