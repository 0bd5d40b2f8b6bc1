"""One customer's timeline: events, messages (with the send policy's channel decision) and step outcomes, merged
in time order, newest first, paged by a keyset cursor ``(at, key)`` so a page boundary inside one instant loses
nothing. Each part reads its own index (``events_customer_time``, ``messages_customer``,
``step_outcomes_customer``) for at most one page, and the merge keeps the newest ``limit`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from store.db import Db

FAR_FUTURE = datetime(9999, 12, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    kind: str
    """``event``, ``message`` or ``step``."""
    at: datetime
    key: str
    """Unique within the timeline, the tie-breaker of the cursor."""
    name: str
    """Event name, message channel, or step id."""
    journey_id: str | None
    journey_version: int | None
    step_id: str | None
    entry_id: str | None
    """The event that started the journey run (for an event: its own id)."""
    status: str | None
    """Message status or step outcome."""
    reason: str | None
    detail: dict[str, Any] | None
    """Event properties, the message's channel decision, or the step outcome's detail."""


_SQL = """
WITH e AS (
    SELECT 'event' AS kind, occurred_at AS at, 'e:' || event_id AS key, name, NULL::text AS journey_id,
           NULL::int AS journey_version, NULL::text AS step_id, event_id AS entry_id, NULL::text AS status,
           NULL::text AS reason, properties AS detail
      FROM events
     WHERE customer_id = $1 AND occurred_at <= $2 AND (occurred_at, 'e:' || event_id) < ($2, $3)
     ORDER BY occurred_at DESC, 3 DESC LIMIT $4),
m AS (
    SELECT 'message', created_at, 'm:' || lpad(id::text, 20, '0'), channel, journey_id, journey_version, step_id,
           entry_id, status, reason, choice
      FROM messages
     WHERE customer_id = $1 AND created_at <= $2 AND (created_at, 'm:' || lpad(id::text, 20, '0')) < ($2, $3)
     ORDER BY created_at DESC, 3 DESC LIMIT $4),
s AS (
    SELECT 'step', recorded_at, 's:' || lpad(id::text, 20, '0'), step_id, journey_id, journey_version, step_id,
           entry_id, outcome, detail ->> 'reason', detail
      FROM step_outcomes
     WHERE customer_id = $1 AND superseded_at IS NULL AND recorded_at <= $2
       AND (recorded_at, 's:' || lpad(id::text, 20, '0')) < ($2, $3)
     ORDER BY recorded_at DESC, 3 DESC LIMIT $4)
SELECT * FROM (SELECT * FROM e UNION ALL SELECT * FROM m UNION ALL SELECT * FROM s) t
 ORDER BY at DESC, key DESC LIMIT $4
"""


async def timeline(
    db: Db, customer_id: str, *, limit: int = 50, before: tuple[datetime, str] | None = None
) -> list[Entry]:
    """The customer's newest ``limit`` entries, older than ``before`` (the ``(at, key)`` of the last entry of the
    page before) when given."""
    at, key = before if before is not None else (FAR_FUTURE, "")
    rows = await db.fetch(_SQL, customer_id, at, key, limit)
    return [Entry(**dict(r)) for r in rows]
