"""Entry admission (orchestration.admission): claim, start, signal a running customer, release the claim."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment

from orchestration import admission
from orchestration.runs import JourneyRuns
from store import entries as entry_store
from tests.support.engine import event, publish_waiting_journey
from tests.support.temporal import task_queue


@pytest.mark.devserver
async def test_entering_a_customer_already_running_only_signals_and_releases_the_claim(
    pool: asyncpg.Pool, dev_env: WorkflowEnvironment
) -> None:
    journey, version = await publish_waiting_journey(pool)
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


@pytest.mark.devserver
@pytest.mark.parametrize("reentry", ["always", "once"])
async def test_an_entry_routed_again_after_its_run_ended_does_not_run_the_customer_twice(
    pool: asyncpg.Pool, dev_env: WorkflowEnvironment, reentry: str
) -> None:
    """An API process killed between starting the run and marking the event routed leaves the event to the
    drainer, which routes it again, possibly after the run ended: the same event must not start a second run."""
    journey, version = await publish_waiting_journey(pool, reentry)
    runs = JourneyRuns(dev_env.client, task_queue(), rpc_timeout=timedelta(seconds=5))
    customer = f"orch-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    trigger = event(customer, "go")

    first = await admission.enter(pool, runs, journey, version, trigger, now)
    handle = dev_env.client.get_workflow_handle(first.workflow_id)
    first_run = (await handle.describe()).run_id
    await handle.terminate("ended before the drainer came back to its event")

    again = await admission.enter(pool, runs, journey, version, trigger, now)  # the same event, routed again
    assert again.outcome == "entered"
    assert (await handle.describe()).run_id == first_run, "the customer went through the journey a second time"
    assert len(await entry_store.entries(pool, journey.id, customer)) == 1

    later = await admission.enter(pool, runs, journey, version, event(customer, "go"), now)  # a new event
    assert later.outcome == ("entered" if reentry == "always" else "refused")
    assert ((await handle.describe()).run_id != first_run) is (reentry == "always")
    if reentry == "always":
        await handle.terminate("test over")
