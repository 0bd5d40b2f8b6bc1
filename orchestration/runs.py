"""Journey runs seen from outside: entering (start, or signal the run already going, knowing which it was),
signalling, and asking whether a run is open.

``JourneyRuns`` carries the client, the task queue and an optional per-call timeout. With a timeout (the event
router) each call is bounded and what a retry can fix is raised as ``TemporalUnavailableError``; without (the
activities, which Temporal retries) calls are plain and their errors pass through as they came.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from config.settings import Settings
from contracts import search_attributes as sa
from contracts.journey import EVENT_SIGNAL, WORKFLOW_NAME, Event, JourneyInput, JourneyResult, workflow_id
from journeys.models import Journey
from orchestration.errors import RunRefusedError, TemporalUnavailableError, answered, is_not_found

T = TypeVar("T")

ENTRY_MEMO = "entry_id"
"""The memo field naming the entry (the trigger's event id) that started a run: a route retried after a crash
finds its own run by it instead of starting a second one."""


@dataclass(frozen=True)
class Entered:
    """What ``enter_journey`` did: the run the trigger went to, and whether this call began it."""

    handle: WorkflowHandle[Any, JourneyResult]
    started: bool
    """True: a new run began with this trigger as its input. False: the customer's run was already going and the
    trigger reached it as an event signal."""


async def enter_journey(
    client: Client,
    definition: Journey,
    version: int,
    trigger: Event,
    *,
    task_queue: str,
    default_timezone: str = "UTC",
    rpc_timeout: timedelta | None = None,
) -> Entered:
    """Start the customer's run of this journey version with the trigger event, or signal the running one.

    The workflow id is ``{journey}:{customer}``, so a customer is in a journey at most once at a time; a new
    entry after the previous run closed is a new run of the same id.

    Start first (the id may not be in use by a running run), and only when Temporal answers that it is, signal the
    trigger to that run. Unlike signal-with-start this tells, on every server version and on the time-skipping
    test server, whether the call began the run, at no extra call in the common case (a new run). The trigger is
    the new run's input (the workflow counts it as seen), so it needs no start signal.
    """
    wid = workflow_id(definition.id, trigger.customer_id)
    for _ in range(3):  # a run that closes between the refused start and the signal: start again
        try:
            handle = await client.start_workflow(
                WORKFLOW_NAME,
                JourneyInput(
                    journey_id=definition.id,
                    journey_version=version,
                    definition=definition,
                    customer_id=trigger.customer_id,
                    trigger=trigger,
                    default_timezone=default_timezone,
                ),
                id=wid,
                task_queue=task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=sa.at_start(definition.id, trigger.customer_id, version, definition.first_step()),
                memo={"journey_name": definition.name, ENTRY_MEMO: trigger.event_id},
                static_summary=f"{definition.name} · {trigger.customer_id}",
                result_type=JourneyResult,
                rpc_timeout=rpc_timeout,
            )
            return Entered(handle, started=True)
        except WorkflowAlreadyStartedError:
            running = client.get_workflow_handle(wid, result_type=JourneyResult)
            try:
                await running.signal(EVENT_SIGNAL, trigger, rpc_timeout=rpc_timeout)
            except RPCError as exc:
                if is_not_found(exc):
                    continue
                raise
            return Entered(running, started=False)
    raise TemporalUnavailableError(f"{wid}: the run kept closing between start and signal")


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

    async def enter(self, definition: Journey, version: int, trigger: Event) -> Entered:
        """``enter_journey`` with this object's client, task queue, time zone and timeout."""
        if self.task_queue is None:
            raise ValueError("JourneyRuns.enter needs a task queue")
        try:
            return await self._enter(definition, version, trigger)
        except RunRefusedError as exc:
            exc.workflow_id = exc.workflow_id or workflow_id(definition.id, trigger.customer_id)
            raise

    async def _enter(self, definition: Journey, version: int, trigger: Event) -> Entered:
        assert self.task_queue is not None
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
        except RunRefusedError as exc:
            exc.workflow_id = exc.workflow_id or wid
            raise
        return True

    async def started_by(self, wid: str, entry_id: str) -> bool:
        """Whether the latest run of ``wid`` (running or closed) was started by entry ``entry_id``: an earlier
        attempt to route that entry got as far as the start (its process died before it could say so)."""
        description = await self._describe(wid)
        return description is not None and await description.memo_value(ENTRY_MEMO, None) == entry_id

    async def is_running(self, wid: str) -> bool:
        """Whether ``wid`` has a running run (False: never started, or closed)."""
        description = await self._describe(wid)
        return description is not None and description.status == WorkflowExecutionStatus.RUNNING

    async def _describe(self, wid: str) -> WorkflowExecutionDescription | None:
        """The latest run of ``wid`` (None: never started)."""
        try:
            return await self.call(self.client.get_workflow_handle(wid).describe(rpc_timeout=self.rpc_timeout))
        except RPCError as exc:
            if is_not_found(exc):
                return None
            raise
