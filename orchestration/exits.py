"""Sending running journeys away: archiving a journey, erasing a customer. One exit loop serves both.

The runs are found through visibility (``orchestration.visibility.runs_query``) and sent the ``exit`` signal
(``ExitRequest(reason=...)``) a page at a time, at most ``SIGNALS_PER_SECOND`` and ``SIGNAL_CONCURRENCY`` at
once. A run wakes from any wait, records ``$exit`` with the reason and completes with status ``exited``; a send
already under way finishes first (it is never cut off mid-delivery). Visibility is eventually consistent and other
API processes pick up an archived status within a few seconds, so the listing is repeated until a pass finds no run
it has not asked yet; asking again is safe and reaches whatever a previous call left.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError

from contracts.journey import EXIT_SIGNAL, ExitRequest
from orchestration.errors import is_not_found
from orchestration.runs import JourneyRuns
from orchestration.visibility import runs_query

log = structlog.get_logger(__name__)

SIGNALS_PER_SECOND = 100.0
SIGNAL_CONCURRENCY = 10
PAGE_SIZE = 200
# Passes over the visibility listing, until one finds nothing new.
MAX_PASSES = 5
# Time for visibility to show the runs that closed before the next pass.
PASS_PAUSE_SECONDS = 0.5


class Run(NamedTuple):
    workflow_id: str
    run_id: str


@dataclass
class ExitReport:
    exited: list[Run] = field(default_factory=list)
    """The running runs asked to exit (those that closed meanwhile are not listed)."""
    complete: bool = True
    """False: the last pass still found runs (call again to finish)."""


async def exit_runs(
    client: Client,
    query: str,
    reason: str,
    *,
    per_second: float = SIGNALS_PER_SECOND,
    max_passes: int = MAX_PASSES,
) -> ExitReport:
    """Ask every running run that ``query`` lists to exit with ``reason``, at most ``per_second`` requests a second."""
    report = ExitReport()
    requested: set[str] = set()
    runs = JourneyRuns(client)
    semaphore = asyncio.Semaphore(SIGNAL_CONCURRENCY)
    loop = asyncio.get_running_loop()
    interval = 1.0 / per_second
    next_slot = loop.time()

    async def send_away(run: Run) -> None:
        async with semaphore:
            if await runs.signal(run.workflow_id, EXIT_SIGNAL, ExitRequest(reason=reason), run_id=run.run_id):
                report.exited.append(run)
            # else: closed meanwhile, nothing to do

    for attempt in range(max_passes):
        found = 0
        tasks: list[asyncio.Task[None]] = []
        async for execution in client.list_workflows(query, page_size=PAGE_SIZE):
            if execution.run_id in requested:
                continue
            requested.add(execution.run_id)
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
    return report


async def exit_journey(
    client: Client,
    journey_id: str,
    reason: str = "archived",
    *,
    per_second: float = SIGNALS_PER_SECOND,
    max_passes: int = MAX_PASSES,
) -> ExitReport:
    """Ask every running run of ``journey_id`` to exit (archiving)."""
    query = runs_query(journey_id=journey_id, running=True)
    report = await exit_runs(client, query, reason, per_second=per_second, max_passes=max_passes)
    log.info("journey.runs_exited", journey_id=journey_id, exited=len(report.exited), complete=report.complete)
    return report


async def exit_customer(
    client: Client, customer_id: str, reason: str, *, wait_seconds: float, max_passes: int
) -> tuple[ExitReport, list[str]]:
    """Ask every running journey of the customer to exit, then wait up to ``wait_seconds`` for them to close.

    Answers the report and the run ids still open when the wait ended.
    """
    report = await exit_runs(client, runs_query(customer_id=customer_id, running=True), reason, max_passes=max_passes)

    async def closed(run: Run) -> None:
        with contextlib.suppress(Exception):  # failed, cancelled, terminated: closed all the same
            await client.get_workflow_handle(run.workflow_id, run_id=run.run_id).result()

    if not report.exited:
        return report, []
    waits = {run.run_id: asyncio.create_task(closed(run)) for run in report.exited}
    _done, pending = await asyncio.wait(waits.values(), timeout=wait_seconds)
    for task in pending:
        task.cancel()
    return report, [run_id for run_id, task in waits.items() if task in pending]


async def delete_closed_histories(client: Client, customer_id: str) -> int:
    """Delete the customer's closed runs from Temporal (their histories hold the profile and events too)."""
    deleted = 0
    async for execution in client.list_workflows(runs_query(customer_id=customer_id, running=False)):
        try:
            await client.workflow_service.delete_workflow_execution(
                DeleteWorkflowExecutionRequest(
                    namespace=client.namespace,
                    workflow_execution=WorkflowExecution(workflow_id=execution.id, run_id=execution.run_id),
                )
            )
            deleted += 1
        except RPCError as exc:
            if not is_not_found(exc):
                log.warning("customer.history_not_deleted", workflow_id=execution.id, error=str(exc))
    return deleted
