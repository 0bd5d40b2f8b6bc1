"""Behaviour events, stored once by id. Rows with ``routed_at IS NULL`` are the routing outbox."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from asyncpg import Record

from contracts.journey import Event
from store.db import Connection, Db, connection
from store.identity import SHARED_LOCKS_SQL, alias_of, lock_keys, normalise

# Resolve each event's identity (an alias linked to a customer, else its fallback profile id), store the events
# that resolved, and answer the runs the resolved customers adopted from merged profiles: one round trip.
_STORE_RESOLVED_SQL = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[], $6::text[],
                         $7::text[], $8::text[])
           WITH ORDINALITY AS i(event_id, name, anonymous_id, properties, occurred_at, kind, value, fallback, n)
), resolved AS (
    SELECT input.*, COALESCE(ids.customer_id, input.fallback) AS customer_id
      FROM input LEFT JOIN identities ids ON ids.kind = input.kind AND ids.value = input.value
), stored AS (
    INSERT INTO events (event_id, customer_id, name, properties, occurred_at, anonymous_id)
    SELECT event_id, customer_id, name, properties, occurred_at, anonymous_id FROM resolved
     WHERE customer_id IS NOT NULL
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
SELECT r.n, r.event_id, r.customer_id, r.event_id IN (SELECT event_id FROM stored) AS fresh,
       a.journey_id, a.workflow_id
  FROM resolved r LEFT JOIN adopted_runs a ON a.customer_id = r.customer_id
 ORDER BY r.n
"""


@dataclass
class Stored:
    """What ``store_resolved`` did with each event."""

    fresh: list[bool]
    """True if newly stored; False if its id was known (or, with no customer, it was not stored)."""
    customer_ids: list[str | None]
    """The customer each event resolved to; None: it names an email or phone linked to nobody."""
    adopted: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per customer: journey id -> workflow id of a run adopted from a merged profile (``store.identity``)."""


async def store_resolved(
    db: Connection, events: list[Event], keys: list[tuple[str, str, str | None]] | None = None
) -> Stored:
    """Resolve identities and store ``events`` in one statement (in a transaction with the alias locks).

    Args:
        db: a connection (not a pool).
        keys: per event, ``(alias kind, value, fallback)``; by default the event's ``customer_id`` (``anon:X`` is
            the anonymous id X) with itself as the fallback. An event that resolves to nobody is not stored.
    """
    if not events:
        return Stored([], [])
    keys = keys or [(*alias_of(e.customer_id), e.customer_id) for e in events]
    async with db.transaction():
        # Waits for an identify in progress on any of these aliases (store.identity.lock_keys).
        await db.execute(SHARED_LOCKS_SQL, lock_keys((k, v) for k, v, _ in keys))
        rows = await _store(db, events, keys)
    out = Stored([False] * len(events), [None] * len(events))
    first: set[str] = set()
    for row in rows:
        index = row["n"] - 1
        if index < len(out.customer_ids) and out.customer_ids[index] is None:
            out.customer_ids[index] = row["customer_id"]
            if row["fresh"] and row["event_id"] not in first:  # an id repeated in the batch is new only once
                first.add(row["event_id"])
                out.fresh[index] = True
        if row["journey_id"] is not None:
            out.adopted.setdefault(row["customer_id"], {})[row["journey_id"]] = row["workflow_id"]
    return out


async def _store(conn: Connection, events: list[Event], keys: list[tuple[str, str, str | None]]) -> list[Record]:
    return await conn.fetch(
        _STORE_RESOLVED_SQL,
        [e.event_id for e in events],
        [e.name for e in events],
        [e.anonymous_id for e in events],
        [e.properties for e in events],
        [e.occurred_at for e in events],
        [k for k, _, _ in keys],
        [normalise(k, v) for k, v, _ in keys],
        [f for _, _, f in keys],
    )


# The outbox, oldest first, without dead letters, and without the events of a customer one of whose events waits
# for its next attempt (backoff per event): a failing event never holds the head of the outbox, and a
# customer's events still go in order (a later one waits behind the earlier one in backoff).
_UNROUTED_SQL = """
SELECT e.event_id, e.customer_id, e.name, e.properties, e.occurred_at, e.anonymous_id
  FROM events e
 WHERE e.routed_at IS NULL AND (e.route_attempts > 0 OR e.received_at < now() - $2::interval)
   AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.event_id = e.event_id)
   AND NOT EXISTS (
       SELECT 1 FROM events w
        WHERE w.customer_id = e.customer_id AND w.routed_at IS NULL AND w.next_attempt_at > now()
          AND (w.received_at, w.event_id) <= (e.received_at, e.event_id)
          AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.event_id = w.event_id))
 ORDER BY e.received_at, e.event_id
 LIMIT $1
"""


async def store_events(db: Db, events: list[Event]) -> list[bool]:
    """Store ``events`` (each resolved like any event, ``store_resolved``); per event, True if newly stored.

    An id repeated within ``events`` counts as new only the first time. ``db``: a pool or a connection.
    """
    async with connection(db) as conn:
        return (await store_resolved(conn, events)).fresh


async def unrouted(db: Db, limit: int, *, min_age: timedelta = timedelta(0), lock: bool = False) -> list[Event]:
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


async def mark_routed(db: Db, event_ids: list[str]) -> None:
    if event_ids:
        await db.execute(
            "UPDATE events SET routed_at = now(), route_error = NULL WHERE event_id = ANY($1::text[])", event_ids
        )


async def mark_route_failed(
    db: Db, event_id: str, error: str, *, backoff_seconds: float = 0.0, max_backoff_seconds: float = 0.0
) -> int:
    """Count a failed attempt. With a backoff, the drainer tries the event (and the customer's later events)
    again after ``backoff_seconds`` doubled per attempt before this one, at most ``max_backoff_seconds``,
    jittered (50-100%). Returns the number of attempts so far."""
    attempts = await db.fetchval(
        """
        UPDATE events
           SET route_attempts = route_attempts + 1, route_error = $2,
               next_attempt_at = CASE WHEN $3::float8 > 0 THEN now() + make_interval(
                   secs => least($3::float8 * power(2, least(route_attempts, 20)), $4::float8) * (0.5 + random() / 2))
               END
         WHERE event_id = $1
        RETURNING route_attempts
        """,
        event_id,
        error[:2000],
        backoff_seconds,
        max_backoff_seconds,
    )
    return int(attempts or 0)


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    """Events not routed yet, dead letters excluded."""
    oldest_age_seconds: float
    """Age of the oldest of them (0 when there is none)."""


async def outbox_stats(db: Db) -> OutboxStats:
    """How many events wait to be routed, and how long the oldest has waited (for metrics and alerts)."""
    row = await db.fetchrow(
        """
        SELECT count(*) AS depth,
               COALESCE(EXTRACT(EPOCH FROM now() - min(e.received_at)), 0)::float8 AS oldest
          FROM events e
         WHERE e.routed_at IS NULL AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.event_id = e.event_id)
        """
    )
    assert row is not None
    return OutboxStats(depth=int(row["depth"]), oldest_age_seconds=max(float(row["oldest"]), 0.0))


async def dead_letter(db: Db, event_id: str, workflow_id: str | None, reason: str, detail: str) -> None:
    """Take the event out of the outbox with the reason a run refused it (``orchestration.errors``)."""
    await db.execute(
        """
        WITH counted AS (
            UPDATE events SET route_attempts = route_attempts + 1, route_error = $4, next_attempt_at = NULL
             WHERE event_id = $1 RETURNING route_attempts
        )
        INSERT INTO dead_letters (event_id, workflow_id, reason, detail, attempts)
        SELECT $1, $2, $3, $4, route_attempts FROM counted
        ON CONFLICT (event_id) DO UPDATE
           SET workflow_id = EXCLUDED.workflow_id, reason = EXCLUDED.reason, detail = EXCLUDED.detail,
               attempts = EXCLUDED.attempts, updated_at = now()
        """,
        event_id,
        workflow_id,
        reason,
        detail[:2000],
    )


async def dead_letters(db: Db, *, limit: int = 100, reason: str | None = None) -> list[dict[str, Any]]:
    """Dead letters, newest first, with their event."""
    rows = await db.fetch(
        """
        SELECT d.event_id, e.customer_id, e.name, d.workflow_id, d.reason, d.detail, d.attempts,
               d.created_at, d.updated_at, e.occurred_at
          FROM dead_letters d JOIN events e USING (event_id)
         WHERE $2::text IS NULL OR d.reason = $2
         ORDER BY d.updated_at DESC, d.event_id
         LIMIT $1
        """,
        limit,
        reason,
    )
    return [dict(r) for r in rows]


async def revive(db: Db, event_id: str) -> Event | None:
    """Put a dead letter back in the outbox (first in line: no backoff); the event, or None if it is no dead
    letter."""
    async with connection(db) as conn, conn.transaction():
        deleted = await conn.fetchval("DELETE FROM dead_letters WHERE event_id = $1 RETURNING event_id", event_id)
        if deleted is None:
            return None
        row = await conn.fetchrow(
            "UPDATE events SET route_attempts = 0, next_attempt_at = NULL, routed_at = NULL WHERE event_id = $1"
            " RETURNING event_id, customer_id, name, properties, occurred_at, anonymous_id",
            event_id,
        )
    return Event(**dict(row)) if row else None


async def get_event(db: Db, event_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow("SELECT * FROM events WHERE event_id = $1", event_id)
    return dict(row) if row else None


async def recent_of(db: Db, customer_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The customer's newest events first: id, name, properties, occurred_at, received_at."""
    rows = await db.fetch(
        """SELECT event_id, name, properties, occurred_at, received_at FROM events
            WHERE customer_id = $1 ORDER BY occurred_at DESC LIMIT $2""",
        customer_id,
        limit,
    )
    return [dict(r) for r in rows]
