"""Entering a customer into a journey: the one signal-with-start call the router, the CLI and tests share."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from journeys.models import Journey
from journeys.runtime import EVENT_SIGNAL, WORKFLOW_NAME, Event, JourneyInput, JourneyResult, workflow_id
from workflows import search_attributes as sa


async def enter_journey(
    client: Client,
    definition: Journey,
    version: int,
    trigger: Event,
    *,
    task_queue: str,
    default_timezone: str = "UTC",
    rpc_timeout: timedelta | None = None,
) -> WorkflowHandle[Any, JourneyResult]:
    """Start the customer's run of this journey version with the trigger event, or signal the running one.

    The workflow id is ``{journey}:{customer}``, so a customer is in a journey at most once at a time; a new
    entry after the previous run closed is a new run of the same id.
    """
    return await client.start_workflow(
        WORKFLOW_NAME,
        JourneyInput(
            journey_id=definition.id,
            journey_version=version,
            definition=definition,
            customer_id=trigger.customer_id,
            trigger=trigger,
            default_timezone=default_timezone,
        ),
        id=workflow_id(definition.id, trigger.customer_id),
        task_queue=task_queue,
        start_signal=EVENT_SIGNAL,
        start_signal_args=[trigger],
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=sa.at_start(definition.id, trigger.customer_id, version, definition.first_step()),
        memo={"journey_name": definition.name},
        static_summary=f"{definition.name} · {trigger.customer_id}",
        result_type=JourneyResult,
        rpc_timeout=rpc_timeout,
    )
