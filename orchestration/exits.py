"""Sending running journeys away: archiving a journey, erasing a customer. One exit loop serves both.

The runs are found through visibility (``orchestration.visibility.runs_query``) and sent the ``exit`` signal
(``ExitRequest(reason=...)``) a page at a time, at most ``SIGNALS_PER_SECOND`` and ``SIGNAL_CONCURRENCY`` at
once. A run wakes from any wait, records ``$exit`` with the reason and completes with status ``exited``; a send
already under way finishes first (it is never cut off mid-delivery). Visibility is eventually consistent and other
API processes pick up an archived status within a few seconds, so the listing is repeated until a pass finds no run
it has not asked yet; asking again is safe and reaches whatever a previous call left.

Archiving and erasing always finish. A run that refuses the signal (it has received Temporal's maximum of signals,
or Temporal rejects the request for that run) or that has not closed ``grace_seconds`` after being asked (stuck on a
failing workflow task, or a send retrying for minutes) is terminated as a last resort. A terminated run cannot record
its ``$exit``: each one is listed in the report (``ExitReport.terminated``, with why) for the caller to record
(``record_terminations``, in the operators' log ``ops_actions``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from contracts import search_attributes as sa
from contracts.journey import EXIT_SIGNAL, ExitRequest
from contracts.segment import schedule_id
from orchestration.errors import RunRefusedError, is_not_found
from orchestration.runs import JourneyRuns
from orchestration.visibility import literal, runs_query
from store import ops as ops_store
from store.db import Db

log = structlog.get_logger(__name__)

SIGNALS_PER_SECOND = 100.0
SIGNAL_CONCURRENCY = 10
PAGE_SIZE = 200
# Passes over the visibility listing, until one finds nothing new.
MAX_PASSES = 5
# Time for visibility to show the runs that closed before the next pass.
PASS_PAUSE_SECONDS = 0.5
# How long a run asked to exit has to close before it is terminated (a send under way finishes first).
GRACE_SECONDS = 20.0
# How often the runs asked are looked for again while waiting for them to close.
GRACE_POLL_SECONDS = 0.5


class Run(NamedTuple):
    workflow_id: str
    run_id: str


class Terminated(NamedTuple):
    workflow_id: str
    run_id: str
    journey_id: str | None
    why: str
    """``signal_limit``/``payload_too_large``/``rejected`` (the exit signal was refused) or ``did_not_close``."""


@dataclass
class ExitReport:
    exited: list[Run] = field(default_factory=list)
    """The running runs asked to exit (those that closed meanwhile are not listed)."""
    terminated: list[Terminated] = field(default_factory=list)
    """The runs terminated as a last resort (they could not record ``$exit`` themselves)."""

    def closed(self) -> list[Run]:
        """Every run this exit closed (asked or terminated)."""
        return [*self.exited, *(Run(t.workflow_id, t.run_id) for t in self.terminated)]

    complete: bool = True
    """False: the last pass still found runs (call again to finish)."""


async def exit_runs(
    client: Client,
    query: str,
    reason: str,
    *,
    per_second: float = SIGNALS_PER_SECOND,
    max_passes: int = MAX_PASSES,
    grace_seconds: float | None = None,
) -> ExitReport:
    """Ask every running run that ``query`` lists to exit with ``reason``, at most ``per_second`` requests a second.

    A run that refuses the signal is terminated at once; with ``grace_seconds`` (default ``GRACE_SECONDS``), a run
    asked that is still running after that long is terminated too.
    """
    report = ExitReport()
    requested: set[str] = set()
    journeys: dict[str, str | None] = {}
    runs = JourneyRuns(client)
    semaphore = asyncio.Semaphore(SIGNAL_CONCURRENCY)
    loop = asyncio.get_running_loop()
    interval = 1.0 / per_second
    next_slot = loop.time()

    async def send_away(run: Run) -> None:
        async with semaphore:
            try:
                if await runs.signal(run.workflow_id, EXIT_SIGNAL, ExitRequest(reason=reason), run_id=run.run_id):
                    report.exited.append(run)
                # else: closed meanwhile, nothing to do
            except RunRefusedError as exc:
                log.warning("run.exit_refused", workflow_id=run.workflow_id, run_id=run.run_id, why=exc.reason)
                await terminate(client, run, journeys.get(run.run_id), reason, exc.reason, report)

    for attempt in range(max_passes):
        found = 0
        tasks: list[asyncio.Task[None]] = []
        async for execution in client.list_workflows(query, page_size=PAGE_SIZE):
            if execution.run_id in requested:
                continue
            requested.add(execution.run_id)
            journeys[execution.run_id] = execution.typed_search_attributes.get(sa.JOURNEY_ID)
            found += 1
            # Pace the requests: one slot every ``interval`` seconds.
            delay = next_slot - loop.time()
            next_slot = max(next_slot, loop.time()) + interval
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send_away(Run(execution.id, execution.run_id))))
        await asyncio.gather(*tasks)
        if found == 0:
            report.complete = True
            break
        report.complete = False
        if attempt + 1 < max_passes:
            await asyncio.sleep(PASS_PAUSE_SECONDS)
    await _terminate_stragglers(
        client, report, journeys, reason, GRACE_SECONDS if grace_seconds is None else grace_seconds
    )
    return report


async def _terminate_stragglers(
    client: Client, report: ExitReport, journeys: dict[str, str | None], reason: str, grace_seconds: float
) -> None:
    """Wait up to ``grace_seconds`` for the runs asked to close; terminate those still running."""
    waiting = {run.run_id: run for run in report.exited}
    semaphore = asyncio.Semaphore(SIGNAL_CONCURRENCY)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_seconds
    while waiting:
        open_runs = await asyncio.gather(*(_is_running(client, run, semaphore) for run in waiting.values()))
        waiting = {run.run_id: run for run, running in zip(waiting.values(), open_runs, strict=True) if running}
        if not waiting or loop.time() >= deadline:
            break
        await asyncio.sleep(min(GRACE_POLL_SECONDS, max(0.0, deadline - loop.time())))
    for run in waiting.values():
        await terminate(client, run, journeys.get(run.run_id), reason, "did_not_close", report)


async def _is_running(client: Client, run: Run, semaphore: asyncio.Semaphore) -> bool:
    try:
        async with semaphore:
            description = await client.get_workflow_handle(run.workflow_id, run_id=run.run_id).describe()
    except RPCError as exc:
        if is_not_found(exc):
            return False
        raise
    return description.status == WorkflowExecutionStatus.RUNNING


async def terminate(
    client: Client, run: Run, journey_id: str | None, reason: str, why: str, report: ExitReport
) -> None:
    """Terminate ``run`` (the last resort of an exit) and list it in ``report``; a run already closed is left be."""
    try:
        await client.get_workflow_handle(run.workflow_id, run_id=run.run_id).terminate(
            reason=f"{reason}: terminated ({why})"
        )
    except RPCError as exc:
        if is_not_found(exc):  # closed meanwhile: it recorded its own exit, or ended
            return
        raise
    log.warning("run.exit_terminated", workflow_id=run.workflow_id, run_id=run.run_id, why=why)
    if run in report.exited:
        report.exited.remove(run)
    report.terminated.append(Terminated(run.workflow_id, run.run_id, journey_id, why))


async def record_terminations(
    db: Db, report: ExitReport, *, actor: str, reason: str, target: str | None = None
) -> None:
    """Record each run the exit terminated in the operators' log (action ``terminate``): the run could not record
    its ``$exit``. ``target``: what to log instead of the workflow id (an erasure logs the pseudonym, never the
    customer's id)."""
    for run in report.terminated:
        await ops_store.record_action(
            db,
            "terminate",
            actor,
            reason,
            target or run.workflow_id,
            {"journey_id": run.journey_id, "run_id": run.run_id, "why": run.why, "terminated": True},
        )


async def exit_journey(
    client: Client,
    journey_id: str,
    reason: str = "archived",
    *,
    per_second: float = SIGNALS_PER_SECOND,
    max_passes: int = MAX_PASSES,
    grace_seconds: float | None = None,
) -> ExitReport:
    """Ask every running run of ``journey_id`` to exit (archiving); terminate those that cannot."""
    query = runs_query(journey_id=journey_id, running=True)
    report = await exit_runs(
        client, query, reason, per_second=per_second, max_passes=max_passes, grace_seconds=grace_seconds
    )
    log.info(
        "journey.runs_exited",
        journey_id=journey_id,
        exited=len(report.exited),
        terminated=len(report.terminated),
        complete=report.complete,
    )
    return report


async def exit_customer(
    client: Client, customer_id: str, reason: str, *, wait_seconds: float, max_passes: int
) -> ExitReport:
    """Ask every running journey of the customer to exit; terminate those not closed ``wait_seconds`` later."""
    query = runs_query(customer_id=customer_id, running=True)
    return await exit_runs(client, query, reason, max_passes=max_passes, grace_seconds=wait_seconds)


async def delete_closed_histories(client: Client, customer_id: str, known: Iterable[Run] = ()) -> int:
    """Delete the customer's closed runs from Temporal (their histories hold the profile and events too): those
    visibility lists as closed, and ``known`` runs (just exited or terminated: visibility may not show them closed
    yet). Answers how many were deleted."""
    runs = {run.run_id: run for run in known}
    async for execution in client.list_workflows(runs_query(customer_id=customer_id, running=False)):
        runs.setdefault(execution.run_id, Run(execution.id, execution.run_id))
    deleted = 0
    for run in runs.values():
        if await delete_history(client, run):
            deleted += 1
    return deleted


async def delete_history(client: Client, run: Run) -> bool:
    """Delete one closed run's history; False when it is already gone (or Temporal refused: logged)."""
    try:
        await client.workflow_service.delete_workflow_execution(
            DeleteWorkflowExecutionRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=run.workflow_id, run_id=run.run_id),
            )
        )
    except RPCError as exc:
        if not is_not_found(exc):
            log.warning("history_not_deleted", workflow_id=run.workflow_id, run_id=run.run_id, error=str(exc))
        return False
    return True


def segment_workflow_id(journey_id: str, entry_id: str, customer_id: str) -> str | None:
    """The id of the segment run that made an entry ``segment:{journey}:{run key}:{customer}`` (None: not one)."""
    prefix, suffix = f"segment:{journey_id}:", f":{customer_id}"
    if not (entry_id.startswith(prefix) and entry_id.endswith(suffix)):
        return None
    run_key = entry_id[len(prefix) : -len(suffix)]
    # A scheduled firing's key is its time (workflow id ``segment:{journey}-{time}``); otherwise the whole id.
    return run_key if run_key.startswith(schedule_id(journey_id)) else f"{schedule_id(journey_id)}-{run_key}"


async def running_segment_runs(client: Client, workflow_ids: Iterable[str]) -> list[str]:
    """Those of these segment workflows with a run still going (its history lists the members it has entered)."""
    running = []
    for wid in sorted(set(workflow_ids)):
        query = f'WorkflowId = {literal(wid)} AND ExecutionStatus = "Running"'
        if (await client.count_workflows(query)).count:
            running.append(wid)
    return running


async def delete_segment_histories(client: Client, workflow_ids: Iterable[str]) -> int:
    """Delete the closed runs (every continue-as-new step) of these segment workflows: their histories list the
    members they entered. A segment run still going is left (``running_segment_runs``: erasure is not complete
    until a later call, once it has ended, deletes it; the next firings' histories never held the id)."""
    deleted = 0
    for wid in sorted(set(workflow_ids)):
        query = f'WorkflowId = {literal(wid)} AND ExecutionStatus != "Running"'
        async for execution in client.list_workflows(query):
            if await delete_history(client, Run(execution.id, execution.run_id)):
                deleted += 1
    return deleted
