"""Entering a customer into a journey: the one signal-with-start call the router, the CLI and tests share."""

from __future__ import annotations

import re
import weakref
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from contracts import search_attributes as sa
from contracts.journey import EVENT_SIGNAL, WORKFLOW_NAME, Event, JourneyInput, JourneyResult, workflow_id
from journeys.models import Journey


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


# Servers from this version on say in the signal-with-start response whether a run was started; older ones
# (and the time-skipping test server, which reports no version) always answer False.
STARTED_FLAG_SINCE = (1, 27)
_reports_started: weakref.WeakKeyDictionary[Client, bool] = weakref.WeakKeyDictionary()


async def reports_started(client: Client) -> bool:
    """Whether this client's server fills in ``started`` on signal-with-start (asked once per client)."""
    known = _reports_started.get(client)
    if known is None:
        from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        version = tuple(int(part) for part in re.findall(r"\d+", info.server_version)[:2])
        known = _reports_started[client] = len(version) == 2 and version >= STARTED_FLAG_SINCE
    return known


async def was_started(client: Client, handle: WorkflowHandle[Any, Any]) -> bool | None:
    """Whether ``enter_journey`` started a new run (False: it signalled the one already running; None: unknown)."""
    response = getattr(handle, "_start_workflow_response", None)
    if response is None or not hasattr(response, "started") or not await reports_started(client):
        return None
    return bool(response.started)


async def is_running(client: Client, workflow_id: str, *, rpc_timeout: timedelta | None = None) -> bool:
    """Whether ``workflow_id`` has a running run (False: never started, or closed)."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe(rpc_timeout=rpc_timeout)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.RUNNING
