"""Visibility queries over journey runs, built in one place with every value quoted, and the counts read with them.

Temporal's list filter is SQL-like; a value goes between double quotes with backslash escapes, so a customer id
that contains a quote or a backslash stays one value and can neither break the query nor widen it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from contracts import search_attributes as sa


def literal(value: str) -> str:
    """``value`` as a double-quoted string literal of the list filter."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def runs_query(
    *,
    journey_id: str | None = None,
    customer_id: str | None = None,
    running: bool | None = None,
    version: int | None = None,
    variant: str | None = None,
    step: str | None = None,
) -> str:
    """The filter for journey runs of ``journey_id`` and/or ``customer_id``; ``running`` True/False: open/closed only;
    ``version``, ``variant``, ``step``: runs of that version, in that variant, at that step now.

    Raises:
        ValueError: neither a journey nor a customer was given (the query would list every run).
    """
    if journey_id is None and customer_id is None:
        raise ValueError("a runs query names a journey, a customer or both")
    clauses = []
    if journey_id is not None:
        clauses.append(f"{sa.JOURNEY_ID.name} = {literal(journey_id)}")
    if customer_id is not None:
        clauses.append(f"{sa.CUSTOMER_ID.name} = {literal(customer_id)}")
    if running is not None:
        clauses.append(f'ExecutionStatus {"=" if running else "!="} "Running"')
    if version is not None:
        clauses.append(f"{sa.JOURNEY_VERSION.name} = {int(version)}")
    if variant is not None:
        clauses.append(f"{sa.VARIANT.name} = {literal(variant)}")
    if step is not None:
        clauses.append(f"{sa.STEP.name} = {literal(step)}")
    return " AND ".join(clauses)


async def running_by_step(
    client: Client,
    journey_id: str,
    step_ids: Sequence[str],
    *,
    version: int | None = None,
    variant: str | None = None,
    rpc_timeout: timedelta,
) -> dict[str, int]:
    """How many runs of the journey are at each step now (its ``ParcoursStep``).

    One count of the journey's running runs first: when there are none (a journey nobody is in now, a version or
    variant left behind), that is the answer for every step, one call instead of one per step; otherwise the steps
    are counted at once.

    Raises:
        TimeoutError: Temporal did not answer within ``rpc_timeout``; RPCError: it refused.
    """

    async def count(step_id: str | None) -> int:
        query = runs_query(journey_id=journey_id, running=True, version=version, variant=variant, step=step_id)
        return (await client.count_workflows(query, rpc_timeout=rpc_timeout)).count

    async with asyncio.timeout(rpc_timeout.total_seconds()):
        if not step_ids or await count(None) == 0:
            return dict.fromkeys(step_ids, 0)
        counts = await asyncio.gather(*(count(step_id) for step_id in step_ids))
    return dict(zip(step_ids, counts, strict=True))


@dataclass(frozen=True)
class RunView:
    """One journey run as visibility lists it."""

    workflow_id: str
    run_id: str | None
    journey_id: str | None
    journey_name: str | None
    customer_id: str | None
    version: int | None
    step: str | None
    status: WorkflowExecutionStatus | None
    started_at: datetime | None
    closed_at: datetime | None


async def list_runs(
    client: Client,
    *,
    journey_id: str | None = None,
    customer_id: str | None = None,
    running: bool | None = None,
    step: str | None = None,
    limit: int = 100,
) -> list[RunView]:
    """Journey runs matching the filters (``runs_query``), newest first, at most ``limit``."""
    query = runs_query(journey_id=journey_id, customer_id=customer_id, running=running, step=step)
    return [await _view(execution) async for execution in client.list_workflows(query, limit=limit)]


async def list_runs_page(
    client: Client,
    *,
    journey_id: str | None = None,
    customer_id: str | None = None,
    running: bool | None = None,
    step: str | None = None,
    page_size: int = 100,
    page_token: bytes | None = None,
) -> tuple[list[RunView], bytes | None]:
    """One page of ``list_runs``, newest first: at most ``page_size`` runs from ``page_token`` (None: the first
    page), and the token of the next page (None: this was the last)."""
    query = runs_query(journey_id=journey_id, customer_id=customer_id, running=running, step=step)
    pages = client.list_workflows(query, page_size=page_size, next_page_token=page_token)
    await pages.fetch_next_page()
    runs = [await _view(execution) for execution in pages.current_page or []]
    return runs, pages.next_page_token or None


async def _view(execution: WorkflowExecution) -> RunView:
    attrs = execution.typed_search_attributes
    return RunView(
        workflow_id=execution.id,
        run_id=execution.run_id,
        journey_id=attrs.get(sa.JOURNEY_ID),
        journey_name=await execution.memo_value("journey_name", None),
        customer_id=attrs.get(sa.CUSTOMER_ID),
        version=attrs.get(sa.JOURNEY_VERSION),
        step=attrs.get(sa.STEP),
        status=execution.status,
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )


async def count_runs(
    client: Client, *, journey_id: str | None = None, running: bool | None = None, rpc_timeout: timedelta
) -> int:
    """How many journey runs match (``runs_query``)."""
    return (
        await client.count_workflows(runs_query(journey_id=journey_id, running=running), rpc_timeout=rpc_timeout)
    ).count
