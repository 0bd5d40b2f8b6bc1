"""The Temporal Schedule that refreshes customer values (``workflows/customer_values.py``).

One schedule, id ``customer-values``, firing every ``PARCOURS_CUSTOMER_VALUES_EVERY`` (``off``: no schedule) a
``CustomerValueWorkflow`` (workflow id ``customer-values-{scheduled time}``) on the journeys' task queue, with
the order event, value property and horizon of the settings; a firing while a refresh is still going is skipped.
Every worker makes the schedule match its settings when it starts (``sync_schedule``); ``parcours customers
values --refresh`` does too, then fires it at once (``refresh_now``).
"""

from __future__ import annotations

import structlog
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

from config.settings import Settings
from contracts.customer_values import CUSTOMER_VALUES_SCHEDULE_ID, CUSTOMER_VALUES_WORKFLOW_NAME, CustomerValuesInput
from journeys.durations import parse_duration
from orchestration.schedules import ScheduleChange, put_schedule, remove_schedule

log = structlog.get_logger(__name__)


def refresh_input(settings: Settings) -> CustomerValuesInput:
    """What every refresh computes from, per the settings."""
    return CustomerValuesInput(
        order_event=settings.order_event,
        value_property=settings.order_value_property,
        horizon_days=settings.clv_horizon_days,
        min_repeat_customers=settings.clv_min_repeat_customers,
    )


def build_schedule(settings: Settings) -> Schedule | None:
    """The schedule the settings ask for; None when refreshes are off."""
    every = (settings.customer_values_every or "").strip().lower()
    if every in ("", "off"):
        return None
    return Schedule(
        action=ScheduleActionStartWorkflow(
            CUSTOMER_VALUES_WORKFLOW_NAME,
            refresh_input(settings),
            id=CUSTOMER_VALUES_SCHEDULE_ID,
            task_queue=settings.task_queue,
            static_summary=f"Customer value refresh ({settings.order_event}.{settings.order_value_property})",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=parse_duration(every))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def sync_schedule(client: Client, settings: Settings) -> ScheduleChange:
    """Create, update or delete the schedule to match the settings."""
    schedule = build_schedule(settings)
    if schedule is None:
        change = await remove_schedule(client, CUSTOMER_VALUES_SCHEDULE_ID)
    else:
        change = await put_schedule(client, CUSTOMER_VALUES_SCHEDULE_ID, schedule)
    if change != "none":
        log.info(f"customer_values.schedule_{change}", every=settings.customer_values_every)
    return change


async def refresh_now(client: Client, settings: Settings) -> ScheduleChange:
    """Make the schedule match the settings and fire it now (skipped if a refresh is running). With refreshes
    off there is no schedule: raises ValueError."""
    change = await sync_schedule(client, settings)
    if change in ("deleted", "none"):
        raise ValueError("customer value refreshes are off (PARCOURS_CUSTOMER_VALUES_EVERY=off)")
    await client.get_schedule_handle(CUSTOMER_VALUES_SCHEDULE_ID).trigger(overlap=ScheduleOverlapPolicy.SKIP)
    return change
