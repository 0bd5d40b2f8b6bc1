"""Engagement per message: opens, clicks, and the bounce, complaint or unsubscribe a message caused.

Kept on the ``messages`` row (migration 0008), keyed by the message's idempotency key. Opens and clicks are
counted by the tracking routes (``api/routes_tracking.py``) in the transaction that stores the
``email_opened``/``email_clicked`` event, and only when that event is new, so a retried request counts once.
Bounces, complaints and unsubscribes are moments, not counters: the first report sets ``bounced_at`` (etc.) and a
repeated report changes nothing; ``summary`` counts the messages that have them.

A message that is not (or no longer) in ``messages`` gets nothing: its send has not committed yet, or its
customer was erased (the key was replaced by a pseudonym).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

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


async def record_open(db: Any, message_key: str, at: datetime, *, machine: bool) -> str | None:
    """Count an open of the message; a machine's open (privacy proxy, prefetch) counts in ``opens`` only.

    Returns the message's customer id, or None when there is no such message (nothing counted).
    """
    customer_id: str | None = await db.fetchval(
        """
        UPDATE messages
           SET opens = opens + 1,
               first_opened_at = COALESCE(first_opened_at, $2),
               human_opens = human_opens + CASE WHEN $3 THEN 0 ELSE 1 END,
               first_human_opened_at = CASE WHEN $3 THEN first_human_opened_at
                                            ELSE COALESCE(first_human_opened_at, $2) END
         WHERE idempotency_key = $1
        RETURNING customer_id
        """,
        message_key,
        at,
        machine,
    )
    return customer_id


async def record_click(db: Any, message_key: str, at: datetime) -> str | None:
    """Count a click on a link of the message. Returns its customer id, or None when there is no such message."""
    customer_id: str | None = await db.fetchval(
        """
        UPDATE messages SET clicks = clicks + 1, first_clicked_at = COALESCE(first_clicked_at, $2)
         WHERE idempotency_key = $1
        RETURNING customer_id
        """,
        message_key,
        at,
    )
    return customer_id


async def record_report(
    db: Any, report: Report, *, message_key: str | None = None, message_id: str | None = None
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


async def message_engagement(db: Any, message_key: str) -> dict[str, Any] | None:
    """The engagement of one message (``ENGAGEMENT_COLUMNS``), or None when there is no such message."""
    row = await db.fetchrow(
        f"SELECT {', '.join(ENGAGEMENT_COLUMNS)} FROM messages WHERE idempotency_key = $1",
        message_key,
    )
    return dict(row) if row else None


async def summary(db: Any, journey_id: str) -> list[dict[str, Any]]:
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
