"""Operations on journey runs, for ``parcours ops``: find the broken ones, replay their histories.

Three kinds of broken run, each found through visibility:

- ``step_failed``: a step failed and the journey went on (a send refused or out of retries, a template that cannot
  render, a webhook that failed, a profile update that failed). The workflow sets ``ParcoursHealth`` and
  ``ParcoursFailedStep``; the reason comes from the step's outcome in the store.
- ``stuck``: the run's workflow task keeps failing (a bug in new workflow code). Found by the server's
  ``TemporalReportedProblems`` attribute where the server sets it (after several consecutive failures), and by
  describing the first running runs and looking at the pending workflow task's attempt; the reason is the last
  ``WorkflowTaskFailed`` event's message.
- ``failed`` / ``timed_out``: the run itself closed that way; the reason is its close event's failure.

Nothing here imports workflow code: replaying takes the workflow classes as an argument.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from temporalio.api.batch.v1 import BatchOperationReset
from temporalio.api.common.v1 import ResetOptions, WorkflowExecution
from temporalio.api.enums.v1 import BatchOperationState, EventType, ResetReapplyType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import (
    DescribeBatchOperationRequest,
    GetWorkflowExecutionHistoryReverseRequest,
    ResetWorkflowExecutionRequest,
    StartBatchOperationRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.client import WorkflowExecution as Execution
from temporalio.converter import PayloadConverter
from temporalio.service import RPCError
from temporalio.worker import Replayer

from contracts import search_attributes as sa
from contracts.journey import EXIT_SIGNAL, ExitRequest, workflow_id
from orchestration.errors import Meaning, meaning
from orchestration.runs import JourneyRuns
from orchestration.visibility import literal, runs_query
from store.db import Db
from store.outcomes import failed_steps

PAGE_SIZE = 200
STUCK_AFTER_ATTEMPTS = 2
"""A pending workflow task on this attempt or later has failed before: the run is stuck."""
REASON_LENGTH = 200
HISTORY_TAIL = 50
"""How many of a run's last events are read to find why it failed."""


@dataclass(frozen=True)
class Failure:
    kind: str
    """``step_failed``, ``stuck``, ``failed`` or ``timed_out``."""
    workflow_id: str
    run_id: str
    journey_id: str | None
    customer_id: str | None
    step: str | None
    reason: str
    when: datetime | None
    link: str


def short(reason: str, limit: int = REASON_LENGTH) -> str:
    """The first line of a failure message, at most ``limit`` characters: the cause, not a traceback."""
    text = reason.strip()
    line = text.splitlines()[0] if text else "(no message)"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def ui_link(ui_url: str, namespace: str, workflow_id: str, run_id: str) -> str:
    """The run's page in the Temporal UI."""
    workflow = quote(workflow_id, safe="")
    return f"{ui_url.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows/{workflow}/{run_id}/history"


def _since(since: datetime | None) -> str:
    return since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if since else ""


def _and(*clauses: str) -> str:
    return " AND ".join(c for c in clauses if c)


def _journey(journey_id: str | None) -> str:
    return f"{sa.JOURNEY_ID.name} = {literal(journey_id)}" if journey_id else ""


def step_failed_query(journey_id: str | None = None, since: datetime | None = None) -> str:
    """Runs a failed step marked: running ones, and those closed since ``since``."""
    recent = f'(ExecutionStatus = "Running" OR CloseTime > "{_since(since)}")' if since else ""
    return _and(f"{sa.HEALTH.name} = {literal(sa.HEALTH_STEP_FAILED)}", _journey(journey_id), recent)


def closed_failed_query(journey_id: str | None = None, since: datetime | None = None) -> str:
    """Runs that closed as failed or timed out (since ``since``)."""
    closed = '(ExecutionStatus = "Failed" OR ExecutionStatus = "TimedOut")'
    return _and(closed, _journey(journey_id), f'CloseTime > "{_since(since)}"' if since else "")


def stuck_query(journey_id: str | None = None) -> str:
    """Running runs the server reports as having a failing workflow task (servers that set the attribute)."""
    return _and(
        'ExecutionStatus = "Running"',
        "TemporalReportedProblems IN ('category=WorkflowTaskFailed', 'category=WorkflowTaskTimedOut')",
        _journey(journey_id),
    )


def running_query(journey_id: str | None = None) -> str:
    return _and('ExecutionStatus = "Running"', _journey(journey_id) or f"{sa.JOURNEY_ID.name} IS NOT NULL")


@dataclass
class FailureSearch:
    client: Client
    ui_url: str
    db: Db | None = None
    """Where step outcomes are read for a failed step's reason (None: the reason is the step id)."""
    limit: int = 500
    """At most this many runs of each kind."""
    scan_running: int = 200
    """Describe at most this many running runs to find stuck ones the server has not reported (yet)."""
    notes: list[str] = field(default_factory=list)
    """What the search could not do (shown to the operator)."""

    async def find(self, journey_id: str | None = None, since: datetime | None = None) -> list[Failure]:
        found = await self._step_failures(journey_id, since)
        found += await self._stuck(journey_id)
        found += [await self._closed_failure(e) async for e in self._list(closed_failed_query(journey_id, since))]
        return found

    def _list(self, query: str, limit: int | None = None) -> AsyncIterator[Execution]:
        return self.client.list_workflows(query, page_size=PAGE_SIZE, limit=limit or self.limit)

    def _failure(self, kind: str, execution: Execution, reason: str, step: str | None = None, **extra: Any) -> Failure:
        attrs = execution.typed_search_attributes
        return Failure(
            kind=kind,
            workflow_id=execution.id,
            run_id=execution.run_id,
            journey_id=attrs.get(sa.JOURNEY_ID),
            customer_id=attrs.get(sa.CUSTOMER_ID),
            step=step,
            reason=short(reason),
            when=extra.get("when") or execution.close_time or execution.start_time,
            link=ui_link(self.ui_url, self.client.namespace, execution.id, execution.run_id),
        )

    async def _step_failures(self, journey_id: str | None, since: datetime | None) -> list[Failure]:
        executions = [e async for e in self._list(step_failed_query(journey_id, since))]
        reasons = await failed_steps(self.db, [e.id for e in executions]) if self.db is not None and executions else {}
        failures = []
        for execution in executions:
            step = execution.typed_search_attributes.get(sa.FAILED_STEP)
            known = reasons.get((execution.id, step or ""))
            reason = known.reason if known else "failed (no outcome recorded)"
            failures.append(
                self._failure("step_failed", execution, reason, step, when=known.recorded_at if known else None)
            )
        return failures

    async def _stuck(self, journey_id: str | None) -> list[Failure]:
        # The server's report (set after several consecutive failures, where supported), and the pending task's
        # attempt for the first ``scan_running`` running runs (servers without it, and runs not reported yet).
        reported: list[Execution] = []
        try:
            reported = [e async for e in self._list(stuck_query(journey_id))]
        except RPCError as err:
            if meaning(err) is not Meaning.REJECTED:
                raise
        seen = {e.run_id for e in reported}
        executions = reported + [e for e in await self._scan_for_stuck(journey_id) if e.run_id not in seen]
        failures = []
        for execution in executions:
            event = await self._last_event(execution, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
            reason = event.workflow_task_failed_event_attributes.failure.message if event else "workflow task failing"
            step = execution.typed_search_attributes.get(sa.STEP)
            failures.append(self._failure("stuck", execution, reason, step))
        return failures

    async def _scan_for_stuck(self, journey_id: str | None) -> list[Execution]:
        stuck, scanned = [], 0
        async for execution in self._list(running_query(journey_id), limit=self.scan_running):
            scanned += 1
            described = await self.client.get_workflow_handle(execution.id, run_id=execution.run_id).describe()
            task = described.raw_description.pending_workflow_task
            if task is not None and task.attempt >= STUCK_AFTER_ATTEMPTS:
                stuck.append(execution)
        if scanned >= self.scan_running:
            self.notes.append(f"looked for stuck runs among the first {scanned} running runs only")
        return stuck

    async def _closed_failure(self, execution: Execution) -> Failure:
        kind = "timed_out" if execution.status == WorkflowExecutionStatus.TIMED_OUT else "failed"
        event = await self._last_event(execution, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED)
        reason = event.workflow_execution_failed_event_attributes.failure.message if event else kind.replace("_", " ")
        return self._failure(kind, execution, reason, execution.typed_search_attributes.get(sa.STEP))

    async def _last_event(self, execution: Execution, event_type: EventType.ValueType) -> HistoryEvent | None:
        """The newest event of this type among the run's last ``HISTORY_TAIL`` events."""
        answer = await self.client.workflow_service.get_workflow_execution_history_reverse(
            GetWorkflowExecutionHistoryReverseRequest(
                namespace=self.client.namespace,
                execution=WorkflowExecution(workflow_id=execution.id, run_id=execution.run_id),
                maximum_page_size=HISTORY_TAIL,
            )
        )
        return next((e for e in answer.history.events if e.event_type == event_type), None)


# --- one customer out ------------------------------------------------------------------------------------------


async def exit_customer_run(client: Client, journey_id: str, customer_id: str, reason: str) -> list[str]:
    """Ask the customer's running run of the journey to exit with ``reason``; answers the workflow ids asked.

    The run is ``{journey}:{customer}``, or, for a visitor identified as the customer, the run it adopted (found by
    its search attributes). Empty: the customer is not in the journey.
    """
    runs = JourneyRuns(client)
    request = ExitRequest(reason=reason)
    direct = workflow_id(journey_id, customer_id)
    if await runs.signal(direct, EXIT_SIGNAL, request):
        return [direct]
    asked = []
    query = runs_query(journey_id=journey_id, customer_id=customer_id, running=True)
    async for execution in client.list_workflows(query, page_size=PAGE_SIZE, limit=10):
        if await runs.signal(execution.id, EXIT_SIGNAL, request, run_id=execution.run_id):
            asked.append(execution.id)
    return asked


# --- reset ----------------------------------------------------------------------------------------------------

RESET_POINTS = ("last-task", "first-task", "step")
"""Where a reset goes back to: the run's last or first completed workflow task, or the one just before a step."""


@dataclass(frozen=True)
class ResetPlan:
    """One run to reset: where to, from which event (a ``WorkflowTaskCompleted``), or why it cannot be."""

    workflow_id: str
    run_id: str
    status: str
    event_id: int | None
    """The workflow task the new run re-runs from; None: no such point in the history (``why`` says)."""
    why: str | None = None
    """Why the run cannot be reset there (None when it can)."""


def reset_point(history: WorkflowHistory, to: str, step: str | None = None) -> tuple[int | None, str | None]:
    """The ``WorkflowTaskCompleted`` event a reset of this history goes back to, or None and why not.

    ``first-task`` / ``last-task``: the first or last completed workflow task. ``step``: the one completed just
    before the step ``step`` last started, i.e. the task whose commands start it. A step starts where the workflow
    sets the ``ParcoursStep`` search attribute to it (the run shows the step it is in: ``_show`` in the journey
    workflow), after a value other than it; resetting to that task re-runs the step and everything after it.
    """
    completed = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    if to != "step":
        tasks = [e.event_id for e in history.events if e.event_type == completed]
        if not tasks:
            return None, "no completed workflow task"
        return (tasks[0] if to == "first-task" else tasks[-1]), None
    if not step:
        raise ValueError("reset to a step: name the step")
    last_task: int | None = None
    shown: str | None = None
    found: int | None = None
    for event in history.events:
        if event.event_type == completed:
            last_task = event.event_id
        elif event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if sa.STEP.name not in fields:
                continue
            value = PayloadConverter.default.from_payload(fields[sa.STEP.name])
            if value == step and shown != step and last_task is not None:
                found = last_task
            shown = value if isinstance(value, str) else None
    if found is None:
        return None, f"step {step!r} never started in this run"
    return found, None


async def plan_resets(
    client: Client,
    to: str,
    *,
    query: str | None = None,
    workflow_id: str | None = None,
    limit: int = 100,
    step: str | None = None,
) -> list[ResetPlan]:
    """The runs to reset (the latest run of ``workflow_id``, or at most ``limit`` runs ``query`` lists) and the
    event each would be reset to (``reset_point``: ``to`` is ``first-task``, ``last-task`` or ``step`` with
    ``step`` naming it)."""
    if to not in RESET_POINTS:
        raise ValueError(f"reset to {to!r}: use one of {', '.join(RESET_POINTS)}")
    if (to == "step") != bool(step):
        raise ValueError("name a step with --to step, and only then")
    executions: list[tuple[str, str, str]] = []
    if workflow_id is not None:
        described = await client.get_workflow_handle(workflow_id).describe()
        executions.append((described.id, described.run_id, _status(described.status)))
    else:
        async for execution in client.list_workflows(query, page_size=PAGE_SIZE, limit=limit):
            executions.append((execution.id, execution.run_id, _status(execution.status)))
    plans = []
    for wid, run_id, status in executions:
        history = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
        event_id, why = reset_point(history, to, step)
        plans.append(ResetPlan(wid, run_id, status, event_id, why))
    return plans


def _status(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else "unknown"


async def reset_run(client: Client, plan: ResetPlan, reason: str, request_id: str) -> str:
    """Reset one run to ``plan.event_id`` (Temporal's ResetWorkflowExecution); answers the new run's id.

    ``request_id`` makes a retried call the same reset. The old run is terminated if it was running; the new run
    re-runs from that workflow task, its activities record new step outcomes (the old ones are kept, superseded),
    and sends find their recorded messages instead of messaging anyone again.
    """
    assert plan.event_id is not None
    answer = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=plan.workflow_id, run_id=plan.run_id),
            reason=reason,
            workflow_task_finish_event_id=plan.event_id,
            request_id=request_id,
        )
    )
    return str(answer.run_id)


@dataclass(frozen=True)
class BatchReset:
    """What a batch reset did, as Temporal's batch job describes it when it stops running (or when waiting ended)."""

    job_id: str
    state: str
    """``completed``, ``failed``, or ``running`` (the wait ended first)."""
    total: int
    done: int
    failed: int


BATCH_POLL_SECONDS = 0.5


async def start_batch_reset(client: Client, plans: Sequence[ResetPlan], to: str, reason: str, job_id: str) -> None:
    """Start Temporal's batch reset of exactly the runs planned (not the query again: what the operator saw and
    confirmed is what is reset) to their first or last completed workflow task; ``job_id`` names the batch job
    (a retried call with it is the same job). Signals received after the reset point are re-applied."""
    if to not in ("first-task", "last-task"):
        raise ValueError(f"a batch reset goes to first-task or last-task, not {to!r}")
    options = ResetOptions(reset_reapply_type=ResetReapplyType.RESET_REAPPLY_TYPE_ALL_ELIGIBLE)
    (options.first_workflow_task if to == "first-task" else options.last_workflow_task).SetInParent()
    await client.workflow_service.start_batch_operation(
        StartBatchOperationRequest(
            namespace=client.namespace,
            job_id=job_id,
            reason=reason,
            executions=[WorkflowExecution(workflow_id=p.workflow_id, run_id=p.run_id) for p in plans],
            reset_operation=BatchOperationReset(
                identity=client.identity,
                options=options,
            ),
        )
    )


async def wait_for_batch(client: Client, job_id: str, *, timeout: float) -> BatchReset:  # noqa: ASYNC109
    """Describe the batch job until it stops running, or ``timeout`` seconds pass (then state ``running``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = await client.workflow_service.describe_batch_operation(
            DescribeBatchOperationRequest(namespace=client.namespace, job_id=job_id)
        )
        running = answer.state in (
            BatchOperationState.BATCH_OPERATION_STATE_RUNNING,
            BatchOperationState.BATCH_OPERATION_STATE_UNSPECIFIED,
        )
        if not running or asyncio.get_running_loop().time() >= deadline:
            state = "running" if running else BatchOperationState.Name(answer.state).rsplit("_", 1)[-1].lower()
            return BatchReset(
                job_id,
                state,
                answer.total_operation_count,
                answer.complete_operation_count,
                answer.failure_operation_count,
            )
        await asyncio.sleep(BATCH_POLL_SECONDS)


# --- replay ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayResult:
    workflow_id: str
    run_id: str
    error: str | None
    """The first nondeterminism (or other replay) error; None: the run replays."""


async def replay(
    client: Client,
    query: str,
    workflows: Sequence[type],
    *,
    limit: int,
    save_to: Path | None = None,
) -> list[ReplayResult]:
    """Download the histories of the runs ``query`` lists (at most ``limit``) and replay each against ``workflows``.

    The replayer uses the client's data converter (the production one). With ``save_to``, each history is written
    there as ``{workflow id}.{run id}.json`` (the replay corpus format).
    """
    replayer = Replayer(workflows=list(workflows), data_converter=client.data_converter)
    if save_to is not None:
        save_to.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  (once, before any download)
    results = []
    async for execution in client.list_workflows(query, page_size=PAGE_SIZE, limit=limit):
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        if save_to is not None:
            name = f"{execution.id}.{execution.run_id}".replace("/", "_").replace(":", "_")
            (save_to / f"{name}.json").write_text(history.to_json())
        results.append(await replay_one(replayer, history))
    return results


async def replay_one(replayer: Replayer, history: WorkflowHistory) -> ReplayResult:
    run_id = history.events[0].workflow_execution_started_event_attributes.original_execution_run_id
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    error = short(str(result.replay_failure), 500) if result.replay_failure else None
    return ReplayResult(history.workflow_id, run_id, error)
