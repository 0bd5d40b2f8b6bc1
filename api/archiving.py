"""Archiving a journey: no more entries or events for it, no schedule, and its running customers sent away.

The runs are found through visibility (``ParcoursJourneyId = "..." AND ExecutionStatus = "Running"``) and sent
the ``exit`` signal (``ExitRequest(reason="archived")``) a page at a time, at most ``SIGNALS_PER_SECOND``. The
run wakes from any wait, records ``$exit`` with reason ``archived`` and completes with status ``exited``; a send
already under way finishes first (it is never cut off mid-delivery). Visibility is eventually consistent and
other API processes pick up the archived status within ``JOURNEY_REFRESH_SECONDS``, so the listing is repeated
until a pass finds no run it has not asked yet; archiving again is safe and reaches whatever a previous call
left.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from contracts import search_attributes as sa
from contracts.journey import EXIT_SIGNAL, ExitRequest

log = structlog.get_logger(__name__)

SIGNALS_PER_SECOND = 100.0
SIGNAL_CONCURRENCY = 10
PAGE_SIZE = 200
# Passes over the visibility listing, until one finds nothing new.
MAX_PASSES = 5
# Time for visibility to show the runs that closed before the next pass.
PASS_PAUSE_SECONDS = 0.5


@dataclass
class ExitReport:
    exited: list[str] = field(default_factory=list)
    """Workflow ids whose running run was asked to exit."""
    complete: bool = True
    """False: the last pass still found runs (call again to finish)."""


def running_query(journey_id: str) -> str:
    quoted = journey_id.replace("\\", "\\\\").replace('"', '\\"')
    return f'{sa.JOURNEY_ID.name} = "{quoted}" AND ExecutionStatus = "Running"'


async def exit_running(
    client: Client,
    journey_id: str,
    reason: str = "archived",
    *,
    per_second: float = SIGNALS_PER_SECOND,
    max_passes: int = MAX_PASSES,
) -> ExitReport:
    """Ask every running run of ``journey_id`` to exit with ``reason``, at most ``per_second`` requests a second."""
    report = ExitReport()
    requested: set[str] = set()
    semaphore = asyncio.Semaphore(SIGNAL_CONCURRENCY)
    loop = asyncio.get_running_loop()
    interval = 1.0 / per_second
    next_slot = loop.time()

    async def send_away(workflow_id: str, run_id: str | None) -> None:
        async with semaphore:
            try:
                await client.get_workflow_handle(workflow_id, run_id=run_id).signal(
                    EXIT_SIGNAL, ExitRequest(reason=reason)
                )
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:  # closed meanwhile: nothing to do
                    raise
                return
        report.exited.append(workflow_id)

    for attempt in range(max_passes):
        found = 0
        tasks: list[asyncio.Task[None]] = []
        async for execution in client.list_workflows(running_query(journey_id), page_size=PAGE_SIZE):
            if execution.run_id in requested:
                continue
            requested.add(execution.run_id)
            found += 1
            # Pace the requests: one slot every ``interval`` seconds.
            delay = next_slot - loop.time()
            next_slot = max(next_slot, loop.time()) + interval
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send_away(execution.id, execution.run_id)))
        await asyncio.gather(*tasks)
        if found == 0:
            report.complete = True
            break
        report.complete = False
        if attempt + 1 < max_passes:
            await asyncio.sleep(PASS_PAUSE_SECONDS)
    log.info("journey.runs_exited", journey_id=journey_id, exited=len(report.exited), complete=report.complete)
    return report
