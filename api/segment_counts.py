"""Segment audience counts for the console: the last exact count at once, and recounts in the background.

A page never waits on a scan of every customer. It shows the count kept by the last exact count of the segment's
current definition (``store.segments.stored_count``) and, when there is none or it is older than
``segment_count_max_age_seconds``, asks ``Recounts`` to count again in the background; the next load (or the
console's script, polling ``/console/segments/{id}/count.json``) shows the result.

``Recounts`` bounds what page loads can start, whoever sends them: at most one recount of a segment at a time,
at most ``segment_recounts`` at once in the process (past that a page says so and starts nothing), each under a
time limit. Across processes (several API replicas behind a balancer) a segment is still counted by one at a time:
a recount another process holds (``store.segments.count_segment_alone``) is left to it.
The app's lifespan cancels and awaits what is still running at shutdown.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import asyncpg
import structlog
from starlette.requests import Request

from config.settings import Settings
from store import segments as segment_store
from store.segments import SegmentCount, SegmentRow

log = structlog.get_logger(__name__)

RECOUNT_TIMEOUT_SECONDS = 600.0
Started = Literal["counting", "started", "busy"]


class Recounts:
    """Background exact counts of named segments: one per segment at a time, ``settings.segment_recounts`` at
    once."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._limit = settings.segment_recounts
        self._running: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def counting(self, segment_id: str) -> bool:
        return segment_id in self._running

    def start(self, row: SegmentRow) -> Started:
        """Count ``row`` again in the background: ``counting`` when a recount of this segment is already under
        way (nothing more is started), ``busy`` when the process runs as many as it may (nothing is started)."""
        if row.id in self._running:
            return "counting"
        if self._closed or len(self._running) >= self._limit:
            return "busy"
        task = asyncio.create_task(self._recount(row), name=f"parcours-segment-recount-{row.id}")
        self._running[row.id] = task
        task.add_done_callback(lambda done: self._forget(row.id, done))
        return "started"

    def _forget(self, segment_id: str, task: asyncio.Task[None]) -> None:
        if self._running.get(segment_id) is task:
            del self._running[segment_id]

    async def _recount(self, row: SegmentRow) -> None:
        try:
            async with asyncio.timeout(RECOUNT_TIMEOUT_SECONDS):
                count = await segment_store.count_segment_alone(self._pool, row)
            if count is None:  # another process counts it now; the next page load shows what it kept
                log.info("segment.recount_elsewhere", segment_id=row.id)
                return
            log.info("segment.recounted", segment_id=row.id, members=count.members, milliseconds=count.milliseconds)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the page offers the count again; nothing else depends on it
            log.warning("segment.recount_failed", segment_id=row.id, error=repr(exc)[:300])

    async def close(self) -> None:
        """Start no more recounts; cancel those under way and wait for them to end."""
        self._closed = True
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def recounts(request: Request) -> Recounts:
    return request.app.state.segment_recounts  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Reach:
    """What a page shows of a segment's audience: the kept count (None: none for this definition), whether it is
    older than the setting allows, and whether a recount is under way (``busy``: needed but not started)."""

    count: SegmentCount | None
    stale: bool
    counting: bool
    busy: bool
    age_seconds: float | None

    @property
    def age(self) -> str:
        """How long ago the count was exact, in words ("12 seconds", "3 minutes", "2 hours", "5 days")."""
        return ago(self.age_seconds or 0.0)


async def reach(request: Request, db: asyncpg.Pool, row: SegmentRow, max_age: float) -> Reach:
    """The kept count of ``row``; a recount starts in the background when it is missing or older than
    ``max_age`` seconds."""
    kept = await segment_store.stored_count(db, row)
    now = datetime.now(UTC)
    age = kept.age_seconds(now) if kept is not None else None
    stale = age is None or age > max_age
    started: Started | None = recounts(request).start(row) if stale else None
    counting = recounts(request).counting(row.id)
    return Reach(kept, stale, counting, started == "busy", age)


def ago(seconds: float) -> str:
    for size, unit in ((86_400, "day"), (3_600, "hour"), (60, "minute")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n = int(seconds)
    return f"{n} second{'s' if n != 1 else ''}"
