"""The Temporal Schedule behind a journey's scheduled segment entry.

One schedule per journey that has ``entry.segment``, id ``segment:{journey_id}``. Each firing starts a
``SegmentEntryWorkflow`` (workflow id ``segment:{journey_id}-{scheduled time}``) on the journeys' task queue;
a firing while the previous run is still going is skipped. ``sync_schedule`` makes the schedule match the
journey: created or updated on publish, paused with the journey, resumed with it, deleted when the journey is
archived or no longer has a segment.
"""

from __future__ import annotations

from typing import Literal

import structlog
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError

from config.settings import Settings
from contracts.segment import SEGMENT_WORKFLOW_NAME, SegmentRunInput, schedule_id
from journeys.models import Journey, Segment
from orchestration.errors import is_not_found

log = structlog.get_logger(__name__)

ScheduleChange = Literal["created", "updated", "deleted", "none"]


def schedule_spec(segment: Segment) -> ScheduleSpec:
    if segment.every is not None:
        return ScheduleSpec(intervals=[ScheduleIntervalSpec(every=segment.every)])
    assert segment.cron is not None
    return ScheduleSpec(cron_expressions=[segment.cron])


def build_schedule(journey: Journey, version: int, settings: Settings, *, paused: bool) -> Schedule:
    assert journey.entry.segment is not None
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SEGMENT_WORKFLOW_NAME,
            SegmentRunInput(journey_id=journey.id, version=version),
            id=schedule_id(journey.id),
            task_queue=settings.task_queue,
            static_summary=f"{journey.name} · segment entry (v{version})",
        ),
        spec=schedule_spec(journey.entry.segment),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(paused=paused, note=_note(paused)),
    )


def _note(paused: bool) -> str:
    return "journey paused" if paused else "journey active"


async def sync_schedule(
    client: Client, settings: Settings, journey: Journey, version: int, status: str
) -> ScheduleChange:
    """Make the journey's schedule match ``journey`` (its latest version) and its ``status``."""
    if status == "archived" or journey.entry.segment is None:
        return await delete_schedule(client, journey.id)
    paused = status != "active"
    change = await put_schedule(
        client, schedule_id(journey.id), build_schedule(journey, version, settings, paused=paused)
    )
    log.info(f"schedule.{change}", journey_id=journey.id, version=version, paused=paused)
    return change


async def put_schedule(client: Client, schedule_id: str, schedule: Schedule) -> ScheduleChange:
    """Create the schedule ``schedule_id``, or replace what an existing one does by ``schedule``."""
    try:
        await client.create_schedule(schedule_id, schedule)
        return "created"
    except ScheduleAlreadyRunningError:
        pass

    def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=schedule)

    await client.get_schedule_handle(schedule_id).update(update)
    return "updated"


async def remove_schedule(client: Client, schedule_id: str) -> ScheduleChange:
    """Delete the schedule ``schedule_id``; ``none`` when there was none."""
    try:
        await client.get_schedule_handle(schedule_id).delete()
    except RPCError as exc:
        if is_not_found(exc):
            return "none"
        raise
    return "deleted"


async def delete_schedule(client: Client, journey_id: str) -> ScheduleChange:
    change = await remove_schedule(client, schedule_id(journey_id))
    if change == "deleted":
        log.info("schedule.deleted", journey_id=journey_id)
    return change
