"""Visibility queries (orchestration.visibility): one value per id, escaped, never every run."""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client, WorkflowExecutionCount, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from orchestration.runs import JourneyRuns
from orchestration.visibility import running_by_step, runs_query
from tests.support.engine import event, publish_waiting_journey
from tests.support.stack import eventually
from tests.support.temporal import task_queue


def test_runs_query_names_journey_customer_and_status() -> None:
    assert runs_query(journey_id="welcome", running=True) == (
        'ParcoursJourneyId = "welcome" AND ExecutionStatus = "Running"'
    )
    assert runs_query(customer_id="c-1", running=False) == 'ParcoursCustomerId = "c-1" AND ExecutionStatus != "Running"'
    assert runs_query(journey_id="j", customer_id="c") == 'ParcoursJourneyId = "j" AND ParcoursCustomerId = "c"'


def test_runs_query_escapes_quotes_and_backslashes() -> None:
    assert runs_query(customer_id='a"b\\c') == 'ParcoursCustomerId = "a\\"b\\\\c"'
    # A trailing backslash cannot swallow the closing quote.
    assert runs_query(customer_id="x\\") == 'ParcoursCustomerId = "x\\\\"'


def test_runs_query_refuses_to_list_every_run() -> None:
    with pytest.raises(ValueError, match="names a journey, a customer"):
        runs_query(running=True)


@pytest.mark.devserver
async def test_a_quote_or_backslash_in_a_customer_id_neither_breaks_nor_widens_the_query(
    pool: asyncpg.Pool, dev_env: WorkflowEnvironment
) -> None:
    journey, _ = await publish_waiting_journey(pool)
    runs = JourneyRuns(dev_env.client, task_queue())  # no worker: the runs stay open
    tag = uuid.uuid4().hex[:8]
    quoted, slashed, plain = f'q"{tag}', f"b\\{tag}\\", f"p-{tag}"
    handles: dict[str, WorkflowHandle[Any, Any]] = {}
    for customer in (quoted, slashed, plain):
        handles[customer] = (await runs.enter(journey, 1, event(customer, "go"))).handle

    async def listed(customer_id: str) -> list[str]:
        query = runs_query(journey_id=journey.id, customer_id=customer_id, running=True)
        return [w.id async for w in dev_env.client.list_workflows(query)]

    assert await eventually(functools.partial(listed, plain), timeout=15) == [handles[plain].id]
    # Quoted, these ids stay one value: the query runs and lists at most that customer's run (the dev server's
    # SQLite visibility cannot match a value holding a quote or backslash at all; the API's ids hold neither).
    assert set(await listed(quoted)) <= {handles[quoted].id}
    assert set(await listed(slashed)) <= {handles[slashed].id}
    # An id built to close the quote and add a clause finds nothing instead of every run of the journey.
    assert await listed(f'{tag}" OR ParcoursJourneyId = "{journey.id}') == []
    assert await listed(f"{tag}\\") == []
    for handle in handles.values():
        await handle.terminate("test over")


class _CountingClient:
    """The dev server's client, noting every count it is asked for (the load the console puts on visibility)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.counted: list[str] = []

    async def count_workflows(self, query: str, **kwargs: Any) -> WorkflowExecutionCount:
        self.counted.append(query)
        return await self.client.count_workflows(query, **kwargs)


@pytest.mark.devserver
async def test_waiting_now_asks_once_for_a_journey_nobody_is_in_and_per_step_otherwise(
    pool: asyncpg.Pool, dev_env: WorkflowEnvironment
) -> None:
    journey, version = await publish_waiting_journey(pool)
    journey = journey.model_copy(update={"id": f"orch-{uuid.uuid4().hex[:8]}"})  # this test's runs only
    steps = ["nap", "later", "$exit"]
    counting = _CountingClient(dev_env.client)
    timeout = timedelta(seconds=5)

    nobody = await running_by_step(counting, journey.id, steps, rpc_timeout=timeout)  # type: ignore[arg-type]
    assert nobody == {"nap": 0, "later": 0, "$exit": 0}
    assert len(counting.counted) == 1  # not one per step

    # One run waiting at "nap": the journey's count says someone is in it, so each step is asked.
    handle = (await JourneyRuns(dev_env.client, task_queue()).enter(journey, version, event("c-1", "go"))).handle
    try:

        async def at_nap() -> bool:
            counting.counted.clear()
            found = await running_by_step(counting, journey.id, steps, rpc_timeout=timeout)  # type: ignore[arg-type]
            return found == {"nap": 1, "later": 0, "$exit": 0}

        await eventually(at_nap, timeout=15)
        assert len(counting.counted) == 1 + len(steps)
        # A version nobody runs is nobody's journey: one count again.
        counting.counted.clear()
        other = await running_by_step(counting, journey.id, steps, version=version + 1, rpc_timeout=timeout)  # type: ignore[arg-type]
        assert other == dict.fromkeys(steps, 0) and len(counting.counted) == 1
    finally:
        await handle.terminate("test over")
