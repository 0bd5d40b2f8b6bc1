"""Letting one customer into a journey from inside Parcours: segment schedules and hand-offs between journeys.

The entry sequence itself is the router's (``orchestration.admission``); this module reads which version of the
journey takes entries now and adapts the activities' dependencies to it.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from temporalio.client import Client

from config.settings import Settings
from contracts.journey import Event
from journeys.models import Journey
from orchestration import admission
from orchestration.admission import Admission
from orchestration.runs import JourneyRuns
from store import journeys as journey_store
from store.entries import EntrySource

__all__ = ["Admission", "admit", "current_journey"]


async def current_journey(pool: asyncpg.Pool, journey_id: str) -> tuple[Journey | None, int, str | None]:
    """The journey's latest definition and version, or why it takes no entries now."""
    latest = await journey_store.latest(pool, journey_id)
    if latest is None:
        return None, 0, "unknown journey"
    if latest.status != "active":
        return None, 0, f"journey {latest.status}"
    return latest.journey, latest.version, None


async def admit(
    pool: asyncpg.Pool,
    client: Client,
    settings: Settings,
    journey: Journey,
    version: int,
    trigger: Event,
    now: datetime,
    source: EntrySource,
) -> Admission:
    """Enter ``trigger.customer_id`` with ``trigger`` as the entry (its id is the entry id). Safe to retry."""
    return await admission.admit(pool, JourneyRuns.of(client, settings), journey, version, trigger, now, source)
