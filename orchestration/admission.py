"""Letting a customer into a journey: the one entry sequence the router, segment runs and hand-offs share.

``enter``: claim the entry under the journey's re-entry policy (``store.entries.claim_entry``, recorded before
the call), start the run ``{journey}:{customer}`` or signal it when it is already going, and in that case
release the claim (it did not become an entry). A customer in the journey through a run adopted in a merge has
that run signalled instead. ``admit`` is the sequence for entries from inside Parcours (segment schedules,
hand-offs): it first leaves alone a customer already in the journey by another entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from config import metrics
from contracts.journey import EVENT_SIGNAL, Event, workflow_id
from journeys.models import Journey
from orchestration.runs import JourneyRuns
from store import entries as entry_store
from store import identity as identity_store

Admission = Literal["entered", "refused", "already_running"]


@dataclass(frozen=True)
class Entry:
    outcome: Admission
    workflow_id: str
    """The run the trigger went to (refused: the one it would have gone to); an adopted run's id when the
    customer is in the journey through a merge."""


async def enter(
    pool: asyncpg.Pool,
    runs: JourneyRuns,
    journey: Journey,
    version: int,
    trigger: Event,
    now: datetime,
    *,
    source: entry_store.EntrySource = "trigger",
    adopted: str | None = None,
) -> Entry:
    """Claim, start (or signal the running run), and release the claim when no run began.

    ``trigger.event_id`` is the entry id.

    ``adopted``: the workflow id of the run the customer adopted in a merge for this journey, if any: it gets the
    trigger when it is still running (and is forgotten when it is not).
    Safe to repeat: a claim for the same entry id is the same entry.
    """
    customer_id, entry_id = trigger.customer_id, trigger.event_id
    wid = workflow_id(journey.id, customer_id)
    claim = await entry_store.claim_entry(
        pool, journey.id, customer_id, entry_id, version, journey.entry, now, source=source
    )
    if not claim:
        return Entry("refused", wid)
    if adopted is not None:
        if await runs.signal(adopted, EVENT_SIGNAL, trigger):
            if claim.new:
                await entry_store.release_entry(pool, journey.id, customer_id, entry_id)
            return Entry("already_running", adopted)
        await identity_store.forget_adopted(pool, customer_id, journey.id, adopted)
    if not claim.new and await runs.started_by(wid, entry_id):
        # This entry was claimed and its run started before, by a route whose process died before it marked the
        # event routed; the run may have finished meanwhile: starting again would run the customer twice.
        return Entry("entered", wid)
    entered = await runs.enter(journey, version, trigger)
    if claim.new and not entered.started:
        # The customer is in the journey right now: the trigger only reached the running run.
        await entry_store.release_entry(pool, journey.id, customer_id, entry_id)
        return Entry("already_running", wid)
    if entered.started:
        metrics.ENTRIES.labels(journey=journey.id, source=source).inc()
    return Entry("entered", wid)


async def running_by_another_entry(
    pool: asyncpg.Pool, runs: JourneyRuns, journey_id: str, customer_id: str, entry_id: str
) -> bool:
    """Whether the customer is in the journey now by another entry (this entry's own run, on a retry: no).

    A run adopted from a profile merged into the customer counts as theirs.
    """
    adopted = (await identity_store.adopted_runs(pool, [customer_id])).get(customer_id, {}).get(journey_id)
    if adopted is not None and await runs.is_running(adopted):
        return True
    if not await runs.is_running(workflow_id(journey_id, customer_id)):
        return False
    return not await entry_store.has_entry(pool, journey_id, customer_id, entry_id)


async def admit(
    pool: asyncpg.Pool,
    runs: JourneyRuns,
    journey: Journey,
    version: int,
    trigger: Event,
    now: datetime,
    source: entry_store.EntrySource,
) -> Admission:
    """Enter ``trigger.customer_id`` unless already in the journey by another entry. Safe to retry.

    "Already running" is asked of Temporal (describe) before the claim; a run that starts between that question
    and the start is caught by ``enter``, whose start is refused while a run is going.
    """
    if await running_by_another_entry(pool, runs, journey.id, trigger.customer_id, trigger.event_id):
        return "already_running"
    return (await enter(pool, runs, journey, version, trigger, now, source=source)).outcome
