"""The Temporal Schedule behind a journey's scheduled segment entry.

One schedule per journey that has ``entry.segment``, id ``segment:{journey_id}``. Each firing starts a
``SegmentEntryWorkflow`` (workflow id ``segment:{journey_id}-{scheduled time}``) on the journeys' task queue;
a firing while the previous run is still going is skipped. ``sync_schedule`` makes the schedule match the
journey: created or updated on publish, paused with the journey, resumed with it, deleted when the journey is
archived or no longer has a segment.
"""

from __future__ import annotations

import re
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
from journeys.validation import JourneyIssue
from orchestration.errors import is_not_found

log = structlog.get_logger(__name__)

ScheduleChange = Literal["created", "updated", "deleted", "none"]

_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_CRON_NAMES = {
    3: {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    4: {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
}
_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_CRON_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/([0-9]+))?$")


def cron_problem(expression: str) -> str | None:
    """What is wrong with a five-field cron expression (``minute hour day month weekday``), or None."""
    text = expression.strip().lower()
    if text in _CRON_MACROS:
        return None
    fields = text.split()
    if len(fields) != 5:
        return (
            f"malformed cron '{expression}': use five fields 'minute hour day-of-month month day-of-week' "
            f"(e.g. '0 9 * * 1') or one of {', '.join(_CRON_MACROS)}"
        )
    for index, (value, (name, low, high)) in enumerate(zip(fields, _CRON_FIELDS, strict=True)):
        names = _CRON_NAMES.get(index, {})
        for item in value.split(","):
            match = _CRON_ITEM.match(item)
            if match is None:
                return f"malformed cron '{expression}': bad {name} '{item}'"
            span, step = match.groups()
            if step is not None and int(step) == 0:
                return f"malformed cron '{expression}': a step of 0 in the {name}"
            if span == "*":
                continue
            bounds = []
            for part in span.split("-"):
                number = names.get(part, int(part) if part.isdigit() else None)
                if number is None or not low <= number <= high:
                    return f"malformed cron '{expression}': {name} '{part}' is not in {low}-{high}"
                bounds.append(number)
            if len(bounds) == 2 and bounds[0] > bounds[1]:
                return f"malformed cron '{expression}': {name} range '{span}' runs backwards"
    return None


def segment_issues(journey: Journey) -> list[JourneyIssue]:
    """Problems with the journey's segment schedule that the model cannot see (a malformed cron)."""
    segment = journey.entry.segment
    if segment is None or segment.cron is None:
        return []
    problem = cron_problem(segment.cron)
    if problem is None:
        return []
    return [JourneyIssue(location="entry.segment.cron", field="entry.segment.cron", message=problem)]


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
