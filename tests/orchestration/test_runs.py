"""Driving Temporal from outside: visibility queries stay one value per id, RPC failures mean one thing, and the
entry sequence tells a new run from a signal to a running one on a real server."""

from __future__ import annotations

import asyncio
import functools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from temporalio.client import WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from contracts.journey import EXIT_SIGNAL, ExitRequest
from journeys.models import Journey
from orchestration import admission
from orchestration.errors import Meaning, TemporalUnavailableError, answered, is_not_found, meaning
from orchestration.runs import JourneyRuns
from orchestration.visibility import runs_query
from store import entries as entry_store
from store import journeys as journey_store
from tests.support.engine import event, journey_from
from tests.support.stack import eventually
from tests.support.temporal import task_queue

# --- the query builder ---------------------------------------------------------------------------------------


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


# --- what RPC failures mean ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (RPCStatusCode.NOT_FOUND, Meaning.NOT_FOUND),
        (RPCStatusCode.ALREADY_EXISTS, Meaning.ALREADY_EXISTS),
        (RPCStatusCode.UNIMPLEMENTED, Meaning.UNSUPPORTED),
        (RPCStatusCode.UNAVAILABLE, Meaning.UNAVAILABLE),
        (RPCStatusCode.DEADLINE_EXCEEDED, Meaning.UNAVAILABLE),
        (RPCStatusCode.RESOURCE_EXHAUSTED, Meaning.UNAVAILABLE),
        (RPCStatusCode.INVALID_ARGUMENT, Meaning.REJECTED),
        (RPCStatusCode.PERMISSION_DENIED, Meaning.REJECTED),
    ],
)
def test_rpc_status_codes_map_to_what_they_mean(status: RPCStatusCode, expected: Meaning) -> None:
    assert meaning(RPCError("boom", status, b"")) is expected
    assert is_not_found(RPCError("boom", status, b"")) is (expected is Meaning.NOT_FOUND)


def test_sdk_and_transport_errors_have_a_meaning_and_others_none() -> None:
    assert meaning(WorkflowAlreadyStartedError("wid", "JourneyWorkflow")) is Meaning.ALREADY_EXISTS
    assert meaning(TimeoutError()) is Meaning.UNAVAILABLE
    assert meaning(ConnectionRefusedError()) is Meaning.UNAVAILABLE
    assert meaning(ValueError("not Temporal's")) is None


async def test_answered_leaves_not_found_as_an_answer_and_defers_the_rest() -> None:
    async def failing(status: RPCStatusCode) -> None:
        raise RPCError("boom", status, b"")

    with pytest.raises(RPCError) as not_found:
        await answered(failing(RPCStatusCode.NOT_FOUND), timedelta(seconds=1))
    assert is_not_found(not_found.value)
    with pytest.raises(TemporalUnavailableError, match="UNAVAILABLE"):
        await answered(failing(RPCStatusCode.UNAVAILABLE), timedelta(seconds=1))

    async def slow() -> None:
        await asyncio.sleep(5)

    with pytest.raises(TemporalUnavailableError):
        await answered(slow(), timedelta(milliseconds=50))


# --- against the dev server -----------------------------------------------------------------------------------


async def _publish_waiting_journey(pool: asyncpg.Pool, reentry: str = "always") -> tuple[Journey, int]:
    journey = journey_from(
        {
            "id": "orch",
            "name": "Orchestration",
            "trigger": {"event": "go"},
            "entry": {"reentry": reentry},
            "steps": [{"id": "nap", "type": "wait", "duration": "1d"}],
        }
    )
    version, _ = await journey_store.publish(pool, journey)
    return journey, version


@pytest.mark.devserver
async def test_a_quote_or_backslash_in_a_customer_id_neither_breaks_nor_widens_the_query(
    pool: asyncpg.Pool, dev_env: WorkflowEnvironment
) -> None:
    journey, _ = await _publish_waiting_journey(pool)
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


@pytest.mark.devserver
async def test_signal_and_describe_say_not_there_for_a_run_that_never_was(dev_env: WorkflowEnvironment) -> None:
    runs = JourneyRuns(dev_env.client, rpc_timeout=timedelta(seconds=5))
    missing = f"nobody:{uuid.uuid4().hex}"
    assert await runs.signal(missing, EXIT_SIGNAL, ExitRequest(reason="test")) is False
    assert await runs.is_running(missing) is False


@pytest.mark.devserver
async def test_entering_a_customer_already_running_only_signals_and_releases_the_claim(
    pool: asyncpg.Pool, dev_env: WorkflowEnvironment
) -> None:
    journey, version = await _publish_waiting_journey(pool)
    runs = JourneyRuns(dev_env.client, task_queue(), rpc_timeout=timedelta(seconds=5))
    customer = f"orch-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)

    first = await admission.enter(pool, runs, journey, version, event(customer, "go"), now)
    assert first.outcome == "entered"
    second = await admission.enter(pool, runs, journey, version, event(customer, "go"), now)
    assert second.outcome == "already_running" and second.workflow_id == first.workflow_id
    # Only the entry that began the run is recorded (``always`` records every entry that becomes one).
    assert len(await entry_store.entries(pool, journey.id, customer)) == 1
    history = await dev_env.client.get_workflow_handle(first.workflow_id).fetch_history()
    signals = [e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")]
    assert len(signals) == 1  # the first trigger is the run's input; the second reached the same run as a signal

    await dev_env.client.get_workflow_handle(first.workflow_id).terminate("test over")
    third = await admission.enter(pool, runs, journey, version, event(customer, "go"), now)
    assert third.outcome == "entered"  # a new run of the same id, after the previous one closed
    assert len(await entry_store.entries(pool, journey.id, customer)) == 2
    await dev_env.client.get_workflow_handle(first.workflow_id).terminate("test over")
