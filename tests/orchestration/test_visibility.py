"""Visibility queries (orchestration.visibility): one value per id, escaped, never every run."""

from __future__ import annotations

import functools
import uuid
from typing import Any

import asyncpg
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from orchestration.runs import JourneyRuns
from orchestration.visibility import runs_query
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
