"""Behaviour events, stored once by id. Rows with ``routed_at IS NULL`` are the routing outbox."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from journeys.runtime import Event

_STORE_SQL = """
INSERT INTO events (event_id, customer_id, name, properties, occurred_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

_UNROUTED_SQL = """
SELECT event_id, customer_id, name, properties, occurred_at
  FROM events
 WHERE routed_at IS NULL AND (route_attempts > 0 OR received_at < now() - $2::interval)
 ORDER BY received_at, event_id
 LIMIT $1
"""


async def store_events(db: Any, events: list[Event]) -> list[bool]:
    """Store ``events`` in one round trip; per event, True if newly stored, False if its id was already known.

    An id repeated within ``events`` counts as new only the first time.
    """
    if not events:
        return []
    rows = await db.fetch(
        _STORE_SQL,
        [e.event_id for e in events],
        [e.customer_id for e in events],
        [e.name for e in events],
        [e.properties for e in events],
        [e.occurred_at for e in events],
    )
    inserted = {r["event_id"] for r in rows}
    out = []
    for event in events:
        out.append(event.event_id in inserted)
        inserted.discard(event.event_id)
    return out


async def unrouted(db: Any, limit: int, *, min_age: timedelta = timedelta(0), lock: bool = False) -> list[Event]:
    """Events not routed yet, oldest first.

    Args:
        min_age: skip events received more recently than this unless a routing attempt already failed (an API
            process is probably routing them right now).
        lock: ``FOR UPDATE SKIP LOCKED``, inside the caller's transaction, so two drainers never route the same
            event at the same time.
    """
    sql = _UNROUTED_SQL + (" FOR UPDATE SKIP LOCKED" if lock else "")
    rows = await db.fetch(sql, limit, min_age)
    return [Event(**dict(r)) for r in rows]


async def mark_routed(db: Any, event_ids: list[str]) -> None:
    if event_ids:
        await db.execute(
            "UPDATE events SET routed_at = now(), route_error = NULL WHERE event_id = ANY($1::text[])", event_ids
        )


async def mark_route_failed(db: Any, event_id: str, error: str) -> None:
    await db.execute(
        "UPDATE events SET route_attempts = route_attempts + 1, route_error = $2 WHERE event_id = $1",
        event_id,
        error[:2000],
    )


async def get_event(db: Any, event_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow("SELECT * FROM events WHERE event_id = $1", event_id)
    return dict(row) if row else None
