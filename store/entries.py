"""Journey entries: who entered which journey when, and whether the re-entry policy lets them in again.

``claim_entry`` decides and records in one transaction that holds an advisory lock on (journey, customer), so
two routers (or a router and a segment run) can never both let a ``once`` customer in. With ``always`` there is
nothing to decide: the entry is recorded by one statement. A claim for an
``entry_id`` already recorded is the same entry (a retried route of the same event): it is allowed again.

With ``always`` every trigger is recorded, even one that merely signals a run still in progress; callers that
know (``orchestration.admission.enter`` knows whether its start began a run) ``release_entry`` such a claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from store.db import Connection, Db, connection

EntrySource = Literal["trigger", "segment", "handoff"]

_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('parcours.entry:' || $1 || ':' || $2, 0))"
_LATEST_SQL = """
SELECT entry_id, entered_at FROM journey_entries
 WHERE journey_id = $1 AND customer_id = $2 ORDER BY entered_at DESC LIMIT 1
"""
_INSERT_SQL = """
INSERT INTO journey_entries (journey_id, customer_id, entry_id, version, source, entered_at)
VALUES ($1, $2, $3, $4, $5, $6)
"""


class ReentryPolicy(Protocol):
    """What ``claim_entry`` reads of a journey's ``entry`` (``journeys.models.EntryPolicy``)."""

    @property
    def reentry(self) -> str: ...

    @property
    def cooldown(self) -> Any: ...


@dataclass(frozen=True)
class Claim:
    """The answer of ``claim_entry``; truthy when the customer may enter."""

    allowed: bool
    new: bool
    """True when this call recorded the entry (False: refused, or the same entry_id was recorded before)."""
    reason: str | None = None
    """Why it was refused: ``reentry_once`` or ``cooldown``."""

    def __bool__(self) -> bool:
        return self.allowed


async def claim_entry(
    db: Db,
    journey_id: str,
    customer_id: str,
    entry_id: str,
    version: int,
    policy: ReentryPolicy,
    now: datetime,
    *,
    source: EntrySource = "trigger",
) -> Claim:
    """Decide whether ``customer_id`` may enter ``journey_id`` now under ``policy``, and record it if so.

    Args:
        db: A pool or a connection (not inside a transaction of the caller's: the claim commits on its own).
        now: The moment of entry (the router's clock, or the segment run's workflow time).
    """
    async with connection(db) as conn:
        return await _claim(conn, journey_id, customer_id, entry_id, version, policy, now, source)


async def _claim(
    conn: Connection,
    journey_id: str,
    customer_id: str,
    entry_id: str,
    version: int,
    policy: ReentryPolicy,
    now: datetime,
    source: EntrySource,
) -> Claim:
    if policy.reentry == "always":
        # Nothing to decide: record the entry unless this entry_id was recorded before (a retried route).
        inserted = await conn.fetchval(
            _INSERT_SQL + " ON CONFLICT (journey_id, customer_id, entry_id) DO NOTHING RETURNING true",
            journey_id,
            customer_id,
            entry_id,
            version,
            source,
            now,
        )
        return Claim(True, bool(inserted))
    async with conn.transaction():
        await conn.execute(_LOCK_SQL, journey_id, customer_id)
        same = await conn.fetchval(
            "SELECT 1 FROM journey_entries WHERE journey_id = $1 AND customer_id = $2 AND entry_id = $3",
            journey_id,
            customer_id,
            entry_id,
        )
        if same:
            return Claim(True, False)
        latest = await conn.fetchrow(_LATEST_SQL, journey_id, customer_id)
        if latest is not None:
            if policy.reentry == "once":
                return Claim(False, False, "reentry_once")
            if policy.reentry == "cooldown" and now < latest["entered_at"] + policy.cooldown:
                return Claim(False, False, "cooldown")
        await conn.execute(_INSERT_SQL, journey_id, customer_id, entry_id, version, source, now)
        return Claim(True, True)


async def release_entry(db: Db, journey_id: str, customer_id: str, entry_id: str) -> None:
    """Forget a claim that did not turn into an entry (the customer was still running: only signalled)."""
    await db.execute(
        "DELETE FROM journey_entries WHERE journey_id = $1 AND customer_id = $2 AND entry_id = $3",
        journey_id,
        customer_id,
        entry_id,
    )


async def has_entry(db: Db, journey_id: str, customer_id: str, entry_id: str) -> bool:
    return bool(
        await db.fetchval(
            "SELECT 1 FROM journey_entries WHERE journey_id = $1 AND customer_id = $2 AND entry_id = $3",
            journey_id,
            customer_id,
            entry_id,
        )
    )


async def entries(db: Db, journey_id: str, customer_id: str | None = None) -> list[dict[str, Any]]:
    """The recorded entries of a journey (of one customer), oldest first."""
    rows = await db.fetch(
        """SELECT * FROM journey_entries WHERE journey_id = $1 AND ($2::text IS NULL OR customer_id = $2)
            ORDER BY entered_at, customer_id""",
        journey_id,
        customer_id,
    )
    return [dict(r) for r in rows]


async def segment_entries(db: Db, customer_id: str) -> list[tuple[str, str]]:
    """(journey id, entry id) of the customer's entries by a segment schedule: the entry id names the segment run
    (``segment:{journey}:{run key}:{customer}``), whose history lists the customer among the members it entered."""
    rows = await db.fetch(
        "SELECT journey_id, entry_id FROM journey_entries WHERE customer_id = $1 AND source = 'segment'", customer_id
    )
    return [(r["journey_id"], r["entry_id"]) for r in rows]
