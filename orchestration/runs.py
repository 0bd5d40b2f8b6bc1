"""Journey runs seen from outside: starting (signal-with-start), telling whether a start began a new run,
signalling, and asking whether a run is open.

``JourneyRuns`` carries the client, the task queue and an optional per-call timeout. With a timeout (the event
router) each call is bounded and what a retry can fix is raised as ``TemporalUnavailableError``; without (the
activities, which Temporal retries) calls are plain and their errors pass through as they came.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from config.settings import Settings
from contracts import search_attributes as sa
from contracts.journey import EVENT_SIGNAL, WORKFLOW_NAME, Event, JourneyInput, JourneyResult, workflow_id
from journeys.models import Journey
from orchestration.errors import answered, is_not_found

T = TypeVar("T")

# Servers from this version on say whether signal-with-start began a run: the handle's first_execution_run_id is
# left unset when it did not (up to 1.31), or names the first run of the chain either way (1.32 on). Older ones, and
# the time-skipping test server (no version), do not say.
STARTED_FLAG_SINCE = (1, 27)
_server_versions: weakref.WeakKeyDictionary[Client, tuple[int, ...]] = weakref.WeakKeyDictionary()


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


async def server_version(client: Client) -> tuple[int, ...]:
    """The server's (major, minor) version, asked once per client; ``()`` when it reports none."""
    known = _server_versions.get(client)
    if known is None:
        from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        known = _server_versions[client] = tuple(int(part) for part in re.findall(r"\d+", info.server_version)[:2])
    return known


@dataclass(frozen=True)
class JourneyRuns:
    """The calls on journey runs, bound to one client and one timeout policy (see the module docstring)."""

    client: Client
    task_queue: str | None = None
    """Where new runs start (only ``enter`` needs it)."""
    default_timezone: str = "UTC"
    rpc_timeout: timedelta | None = None
    """Set: each call is bounded (twice this, retries included) and retryable failures become
    ``TemporalUnavailableError``."""

    @classmethod
    def of(cls, client: Client, settings: Settings, rpc_timeout: timedelta | None = None) -> JourneyRuns:
        return cls(client, settings.task_queue, settings.default_timezone, rpc_timeout)

    async def call(self, awaitable: Awaitable[T]) -> T:
        """Await one Temporal call under this object's timeout policy."""
        if self.rpc_timeout is None:
            return await awaitable
        return await answered(awaitable, self.rpc_timeout * 2)

    async def enter(self, definition: Journey, version: int, trigger: Event) -> WorkflowHandle[Any, JourneyResult]:
        """``enter_journey`` with this object's client, task queue, time zone and timeout."""
        if self.task_queue is None:
            raise ValueError("JourneyRuns.enter needs a task queue")
        return await self.call(
            enter_journey(
                self.client,
                definition,
                version,
                trigger,
                task_queue=self.task_queue,
                default_timezone=self.default_timezone,
                rpc_timeout=self.rpc_timeout,
            )
        )

    async def started_new_run(self, handle: WorkflowHandle[Any, Any], trigger: Event) -> bool | None:
        """Whether ``enter`` with ``trigger`` began a new run (False: it signalled the one already running; None:
        the server does not say)."""
        version = await server_version(self.client)
        if len(version) < 2 or version < STARTED_FLAG_SINCE:
            return None
        first, current = handle.first_execution_run_id, handle.result_run_id
        if first is None or first != current:
            return False  # not begun here, or the running run is a later one of a chain that continued as new
        # Begun here, or a first run that was already running: it was begun by this entry iff its input is this trigger.
        return await self.call(self._begun_by(handle.id, current, trigger))

    async def _begun_by(self, wid: str, run_id: str | None, trigger: Event) -> bool:
        history = self.client.get_workflow_handle(wid, run_id=run_id).fetch_history_events(
            page_size=1, rpc_timeout=self.rpc_timeout
        )
        async for event in history:
            attributes = event.workflow_execution_started_event_attributes
            inputs = await self.client.data_converter.decode(attributes.input.payloads, [JourneyInput])
            return bool(inputs) and isinstance(inputs[0], JourneyInput) and inputs[0].entry_id == trigger.event_id
        return False

    async def signal(self, wid: str, signal: str, arg: Any, *, run_id: str | None = None) -> bool:
        """Signal the running workflow ``wid`` (that run, if given); False when there is none (never started, or
        closed)."""
        handle = self.client.get_workflow_handle(wid, run_id=run_id)
        try:
            await self.call(handle.signal(signal, arg, rpc_timeout=self.rpc_timeout))
        except RPCError as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    async def is_running(self, wid: str) -> bool:
        """Whether ``wid`` has a running run (False: never started, or closed)."""
        try:
            description = await self.call(self.client.get_workflow_handle(wid).describe(rpc_timeout=self.rpc_timeout))
        except RPCError as exc:
            if is_not_found(exc):
                return False
            raise
        return description.status == WorkflowExecutionStatus.RUNNING
