"""Broadcasts and their frozen audiences (tables ``broadcasts`` and ``broadcast_recipients``).

The audience is frozen once, when the broadcast starts: one ``INSERT ... SELECT`` copies the segment's members
into ``broadcast_recipients`` with the moment each may be messaged (``due_at``: the send time, or the local send
time in the customer's zone) and the holdout drawn by a hash of broadcast and customer. From then on the segment
no longer matters: the broadcast workflow pages ``pending`` recipients that are due, and ``record_results``
settles a whole batch in one statement. The messages themselves are rows of ``messages`` like journeys' (journey
id ``broadcast:{id}``), so frequency caps, click tracking and exports count them with everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from journeys.broadcasts import Broadcast, broadcast_journey_id
from journeys.models import Audience
from store.db import Db, transaction
from store.segments import Params, segment_where

# Broadcast statuses: scheduled (not frozen yet), sending, paused, cancelled, completed.
STOPPED = ("cancelled", "completed")


@dataclass(frozen=True)
class BroadcastRow:
    id: str
    definition: dict[str, Any]
    segment: dict[str, Any] | None
    status: str
    audience: int | None
    created_at: datetime
    frozen_at: datetime | None
    finished_at: datetime | None

    def broadcast(self) -> Broadcast:
        return Broadcast.model_validate(self.definition)


@dataclass(frozen=True)
class RecipientResult:
    """What became of one recipient's send: a final status, or still ``pending`` until ``due_at`` (deferred)."""

    customer_id: str
    status: str
    reason: str | None = None
    channel: str | None = None
    due_at: datetime | None = None


@dataclass
class Progress:
    counts: dict[str, int] = field(default_factory=dict)
    next_due: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return self.total - self.counts.get("pending", 0)


_COLUMNS = "id, definition, segment, status, audience, created_at, frozen_at, finished_at"


async def create_broadcast(db: Db, broadcast: Broadcast) -> BroadcastRow | None:
    """Store a new broadcast (status ``scheduled``); None when the id is taken."""
    row = await db.fetchrow(
        f"INSERT INTO broadcasts (id, definition) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING {_COLUMNS}",
        broadcast.id,
        broadcast.model_dump(mode="json", exclude_none=True),
    )
    return BroadcastRow(**dict(row)) if row is not None else None


async def delete_unstarted(db: Db, broadcast_id: str) -> None:
    """Remove a broadcast whose run could not be started (nothing frozen, nothing sent)."""
    await db.execute("DELETE FROM broadcasts WHERE id = $1 AND frozen_at IS NULL", broadcast_id)


async def get_broadcast(db: Db, broadcast_id: str) -> BroadcastRow | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM broadcasts WHERE id = $1", broadcast_id)
    return BroadcastRow(**dict(row)) if row is not None else None


async def list_broadcasts(db: Db, *, limit: int = 100) -> list[BroadcastRow]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM broadcasts ORDER BY created_at DESC LIMIT $1", limit)
    return [BroadcastRow(**dict(r)) for r in rows]


async def broadcast_status(db: Db, broadcast_id: str) -> str | None:
    """The status alone: the send loop reads it between chunks to stop within a batch."""
    value = await db.fetchval("SELECT status FROM broadcasts WHERE id = $1", broadcast_id)
    return str(value) if value is not None else None


async def set_status(db: Db, broadcast_id: str, status: str, *, allowed_from: Sequence[str]) -> str | None:
    """Move to ``status`` when the current one is in ``allowed_from``; answers the status after the call (None:
    unknown broadcast). ``cancelled`` and ``completed`` are final."""
    row = await db.fetchrow(
        """
        WITH changed AS (
            UPDATE broadcasts SET status = $2,
                   finished_at = CASE WHEN $2 IN ('cancelled', 'completed') THEN now() ELSE finished_at END
             WHERE id = $1 AND status = ANY($3::text[])
         RETURNING status)
        SELECT COALESCE((SELECT status FROM changed), (SELECT status FROM broadcasts WHERE id = $1)) AS status
        """,
        broadcast_id,
        status,
        list(allowed_from),
    )
    return row["status"] if row is not None else None


async def freeze_audience(
    db: Db,
    broadcast_id: str,
    audience: Audience,
    now: datetime,
    *,
    send_at: datetime | None,
    local_send_at: datetime | None,
    default_timezone: str,
    holdout_percent: float | None,
) -> int:
    """Copy the segment's members into ``broadcast_recipients`` (once: a repeated call answers the first count).

    ``send_at`` (an instant) or ``local_send_at`` (a wall-clock time read in each customer's zone, else
    ``default_timezone``) gives each recipient's ``due_at``; by default ``now``. A hash of broadcast and customer
    puts ``holdout_percent`` of them in the holdout.
    """
    async with transaction(db) as conn:
        frozen = await conn.fetchrow(
            "SELECT frozen_at, audience FROM broadcasts WHERE id = $1 FOR UPDATE", broadcast_id
        )
        if frozen is None:
            raise LookupError(broadcast_id)
        if frozen["frozen_at"] is not None:
            return int(frozen["audience"] or 0)
        p = Params(broadcast_id)
        where = segment_where(audience, now, p)
        if local_send_at is not None:
            local, zone = p.add(local_send_at.replace(tzinfo=None)), p.add(default_timezone)
            due = (
                f"(CASE WHEN c.timezone IN (SELECT name FROM zones) THEN {local}::timestamp AT TIME ZONE c.timezone "
                f"ELSE {local}::timestamp AT TIME ZONE {zone}::text END)"
            )
        else:
            due = f"{p.add(send_at or now)}::timestamptz"
        holdout = "false"
        if holdout_percent:
            share = p.add(round(holdout_percent * 100))
            holdout = f"(('x' || substr(md5($1 || ':' || c.id), 1, 8))::bit(32)::bigint % 10000 < {share}::int)"
        count = await conn.fetchval(
            f"""
            WITH zones AS (SELECT name FROM pg_timezone_names),
            inserted AS (
                INSERT INTO broadcast_recipients (broadcast_id, customer_id, due_at, status)
                SELECT $1, c.id, {due}, CASE WHEN {holdout} THEN 'holdout' ELSE 'pending' END
                  FROM customers c
                 WHERE c.merged_into IS NULL AND {where}
                ON CONFLICT DO NOTHING
                RETURNING 1)
            SELECT count(*) FROM inserted
            """,
            *p.values,
        )
        await conn.execute(
            """UPDATE broadcasts SET segment = $2, audience = $3, frozen_at = $4,
                      status = CASE WHEN status = 'scheduled' THEN 'sending' ELSE status END
                WHERE id = $1""",
            broadcast_id,
            audience.model_dump(mode="json", exclude_none=True),
            int(count or 0),
            now,
        )
        return int(count or 0)


async def due_page(db: Db, broadcast_id: str, now: datetime, *, limit: int) -> list[str]:
    """Pending recipients due by ``now``, at most ``limit``, earliest first."""
    rows = await db.fetch(
        """SELECT customer_id FROM broadcast_recipients
            WHERE broadcast_id = $1 AND status = 'pending' AND due_at <= $2
            ORDER BY due_at, customer_id LIMIT $3""",
        broadcast_id,
        now,
        limit,
    )
    return [r["customer_id"] for r in rows]


async def next_due(db: Db, broadcast_id: str) -> datetime | None:
    """When the next pending recipient is due (None: nobody is pending)."""
    value = await db.fetchval(
        "SELECT min(due_at) FROM broadcast_recipients WHERE broadcast_id = $1 AND status = 'pending'", broadcast_id
    )
    return value if isinstance(value, datetime) else None


async def record_results(db: Db, broadcast_id: str, results: Sequence[RecipientResult], decided_at: datetime) -> None:
    """Settle a batch in one statement; a ``pending`` result only moves its ``due_at`` (deferred)."""
    if not results:
        return
    await db.execute(
        """
        UPDATE broadcast_recipients r
           SET status = u.status, reason = u.reason, channel = u.channel,
               due_at = COALESCE(u.due_at, r.due_at),
               decided_at = CASE WHEN u.status = 'pending' THEN NULL ELSE $7::timestamptz END
          FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
               AS u(customer_id, status, reason, channel, due_at)
         WHERE r.broadcast_id = $1 AND r.customer_id = u.customer_id AND r.status = 'pending'
        """,
        broadcast_id,
        [r.customer_id for r in results],
        [r.status for r in results],
        [r.reason for r in results],
        [r.channel for r in results],
        [r.due_at for r in results],
        decided_at,
    )


async def cancel_pending(db: Db, broadcast_id: str) -> int:
    status = await db.execute(
        "UPDATE broadcast_recipients SET status = 'cancelled' WHERE broadcast_id = $1 AND status = 'pending'",
        broadcast_id,
    )
    return int(status.split()[-1])


async def progress(db: Db, broadcast_id: str) -> Progress:
    rows = await db.fetch(
        """SELECT status, count(*) AS n, min(due_at) FILTER (WHERE status = 'pending') AS next_due
             FROM broadcast_recipients WHERE broadcast_id = $1 GROUP BY status""",
        broadcast_id,
    )
    result = Progress({r["status"]: int(r["n"]) for r in rows})
    result.next_due = next((r["next_due"] for r in rows if r["next_due"] is not None), None)
    return result


@dataclass(frozen=True)
class ChannelReport:
    """One channel's part of a broadcast's report (a broadcast with a channel list falls back per customer)."""

    sent: int
    failed: int
    opened: int
    clicked: int
    clicks: int
    converted: int | None


@dataclass(frozen=True)
class Report:
    """Engagement and conversions, as for a journey step; ``holdout_*`` for the control group; ``by_channel``: the
    same split by the channel each message was recorded on (broadcasts have no variants)."""

    sent: int
    opened: int
    clicked: int
    clicks: int
    converted: int | None
    holdout: int
    holdout_converted: int | None
    by_channel: dict[str, ChannelReport] = field(default_factory=dict)


async def report(db: Db, row: BroadcastRow) -> Report:
    """Opens and clicks of the broadcast's messages; with a goal, recipients who did it within its window of their
    message (the holdout: of the audience's freezing)."""
    broadcast = row.broadcast()
    # The LIKE repeats the predicate of the covering index messages_broadcast_engagement (0020), so that even a
    # generic plan reads the index alone.
    channels = await db.fetch(
        """SELECT channel,
                  count(*) FILTER (WHERE status = 'sent') AS sent,
                  count(*) FILTER (WHERE status = 'failed') AS failed,
                  count(first_human_opened_at) AS opened,
                  count(first_clicked_at) AS clicked,
                  COALESCE(sum(clicks), 0) AS clicks
             FROM messages WHERE journey_id = $1 AND journey_id LIKE 'broadcast:%' AND status IN ('sent', 'failed')
            GROUP BY channel ORDER BY channel""",
        broadcast_journey_id(row.id),
    )
    holdout = await db.fetchval(
        "SELECT count(*) FROM broadcast_recipients WHERE broadcast_id = $1 AND status = 'holdout'", row.id
    )
    converted = holdout_converted = None
    if broadcast.goal is not None:
        converted_sql = """
            SELECT COALESCE(r.channel, ''), count(*) FROM broadcast_recipients r
             WHERE r.broadcast_id = $1 AND r.status = $4
               AND EXISTS (SELECT 1 FROM events e
                            WHERE e.customer_id = r.customer_id AND e.name = $2
                              AND e.occurred_at >= COALESCE(r.decided_at, $5)
                              AND e.occurred_at < COALESCE(r.decided_at, $5) + $3::interval)
             GROUP BY 1
        """
        since = row.frozen_at or row.created_at
        goal = broadcast.goal
        rows = await db.fetch(converted_sql, row.id, goal.event, goal.within, "sent", since)
        converted_by = {r[0]: int(r[1]) for r in rows}
        converted = sum(converted_by.values())
        holdout_rows = await db.fetch(converted_sql, row.id, goal.event, goal.within, "holdout", since)
        holdout_converted = sum(int(r[1]) for r in holdout_rows)
    by_channel = {
        r["channel"]: ChannelReport(
            sent=int(r["sent"]),
            failed=int(r["failed"]),
            opened=int(r["opened"]),
            clicked=int(r["clicked"]),
            clicks=int(r["clicks"]),
            converted=None if converted is None else converted_by.get(r["channel"], 0),
        )
        for r in channels
    }
    return Report(
        sent=sum(c.sent for c in by_channel.values()),
        opened=sum(c.opened for c in by_channel.values()),
        clicked=sum(c.clicked for c in by_channel.values()),
        clicks=sum(c.clicks for c in by_channel.values()),
        converted=converted,
        holdout=int(holdout or 0),
        holdout_converted=holdout_converted,
        by_channel=by_channel,
    )
