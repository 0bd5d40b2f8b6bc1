"""Letting one customer into a journey outside the router: segment schedules and hand-offs between journeys.

The same rules as the router's: only active journeys take entries, new entrants take the latest version, the
journey's re-entry policy is claimed before the run starts, and a customer already in the journey is left alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg
from temporalio.client import Client

from config.settings import Settings
from contracts.journey import Event, workflow_id
from journeys.models import Journey
from store import entries as entry_store
from store import identity as identity_store
from workflows.entry import enter_journey, is_running, was_started

Admission = Literal["entered", "refused", "already_running"]


async def current_journey(pool: asyncpg.Pool, journey_id: str) -> tuple[Journey | None, int, str | None]:
    """The journey's latest definition and version, or why it takes no entries now."""
    row = await pool.fetchrow(
        """SELECT j.status, j.latest_version, v.definition FROM journeys j
             JOIN journey_versions v ON v.journey_id = j.id AND v.version = j.latest_version WHERE j.id = $1""",
        journey_id,
    )
    if row is None:
        return None, 0, "unknown journey"
    if row["status"] != "active":
        return None, 0, f"journey {row['status']}"
    return Journey.model_validate(row["definition"]), row["latest_version"], None


async def running_by_another_entry(
    pool: asyncpg.Pool, client: Client, journey_id: str, customer_id: str, entry_id: str
) -> bool:
    """Whether the customer is in the journey now by another entry (this entry's own run, on a retry: no).

    A run adopted from a profile merged into the customer counts as theirs.
    """
    adopted = (await identity_store.adopted_runs(pool, [customer_id])).get(customer_id, {}).get(journey_id)
    if adopted is not None and await is_running(client, adopted):
        return True
    if not await is_running(client, workflow_id(journey_id, customer_id)):
        return False
    return not await entry_store.has_entry(pool, journey_id, customer_id, entry_id)


async def admit(
    pool: asyncpg.Pool,
    client: Client,
    settings: Settings,
    journey: Journey,
    version: int,
    trigger: Event,
    now: datetime,
    source: Any,
) -> Admission:
    """Enter ``trigger.customer_id`` with ``trigger`` as the entry (its id is the entry id). Safe to retry."""
    customer_id, entry_id = trigger.customer_id, trigger.event_id
    if await running_by_another_entry(pool, client, journey.id, customer_id, entry_id):
        return "already_running"
    claim = await entry_store.claim_entry(
        pool, journey.id, customer_id, entry_id, version, journey.entry, now, source=source
    )
    if not claim:
        return "refused"
    handle = await enter_journey(
        client, journey, version, trigger, task_queue=settings.task_queue, default_timezone=settings.default_timezone
    )
    if await was_started(client, handle) is False and claim.new:
        await entry_store.release_entry(pool, journey.id, customer_id, entry_id)
        return "already_running"
    return "entered"
