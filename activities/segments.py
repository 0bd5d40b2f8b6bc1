"""The activities of a scheduled segment entry: find a page of members, enter a batch of them.

Both read the journey's current row (status and latest version), so a journey paused or archived while a
segment run is under way stops taking entries at the next batch, and new entrants take the latest version, as
entries by the router do.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from temporalio import activity
from temporalio.client import Client

from activities.admission import admit, current_journey
from activities.segment_models import SegmentEnterRequest, SegmentEnterResult, SegmentPage, SegmentPageRequest
from config.settings import Settings
from contracts.journey import Event
from journeys.models import SEGMENT_TRIGGER, Journey
from store import segments as segment_store

log = structlog.get_logger(__name__)


def segment_entry_id(journey_id: str, run_key: str, customer_id: str) -> str:
    return f"segment:{journey_id}:{run_key}:{customer_id}"


class SegmentActivities:
    """Activities with their dependencies injected; the worker registers the bound methods."""

    def __init__(self, pool: asyncpg.Pool, client: Client, settings: Settings) -> None:
        self._pool = pool
        self._client = client
        self._settings = settings

    def all(self) -> list[Any]:
        return [self.segment_members, self.enter_segment_batch]

    async def _current(self, journey_id: str) -> tuple[Journey | None, int, str | None]:
        """The journey's latest definition and version, or why a segment run must stop."""
        journey, version, stopped = await current_journey(self._pool, journey_id)
        if journey is not None and journey.entry.segment is None:
            return None, 0, "no segment"
        return journey, version, stopped

    @activity.defn(name="segment_members")
    async def segment_members(self, request: SegmentPageRequest) -> SegmentPage:
        journey, _, stopped = await self._current(request.journey_id)
        if journey is None or journey.entry.segment is None:
            return SegmentPage(stopped=stopped)
        segment = journey.entry.segment
        async with self._pool.acquire() as conn:
            audience = segment.audience()
            if segment.ref is not None:  # a saved segment: its conditions as they are at this firing
                saved = await segment_store.get_segment(conn, segment.ref)
                if saved is None:
                    return SegmentPage(stopped=f"unknown segment '{segment.ref}'")
                audience = saved.audience()
            ids = await segment_store.member_page(
                conn, audience, request.now, after=request.after, limit=segment.batch_size
            )
        return SegmentPage(customer_ids=ids, batch_size=segment.batch_size, max_per_second=segment.max_per_second)

    @activity.defn(name="enter_segment_batch")
    async def enter_segment_batch(self, request: SegmentEnterRequest) -> SegmentEnterResult:
        """Claim and enter each customer; those already running, or refused by the re-entry policy, are left alone.

        "Already running" is asked of Temporal (describe) before the claim; a run that starts between that
        question and the start is caught by the start, which Temporal refuses while a run is going.

        Safe to retry: a claim for the same entry id is the same entry, and the workflow ignores a trigger event
        id it has seen.
        """
        journey, version, stopped = await self._current(request.journey_id)
        if journey is None:
            return SegmentEnterResult(stopped=stopped)
        result = SegmentEnterResult(version=version)
        for customer_id in request.customer_ids:
            entry_id = segment_entry_id(journey.id, request.run_key, customer_id)
            trigger = Event(
                event_id=entry_id,
                customer_id=customer_id,
                name=SEGMENT_TRIGGER,
                properties={"segment_run": request.run_key},
                occurred_at=request.now,
            )
            outcome = await admit(
                self._pool, self._client, self._settings, journey, version, trigger, request.now, "segment"
            )
            {"entered": result.entered, "refused": result.refused, "already_running": result.already_running}[
                outcome
            ].append(customer_id)
            activity.heartbeat(customer_id)
        log.info(
            "segment.batch_entered",
            journey_id=journey.id,
            entered=len(result.entered),
            refused=len(result.refused),
            already_running=len(result.already_running),
        )
        return result
