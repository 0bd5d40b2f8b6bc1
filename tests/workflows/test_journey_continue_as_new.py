"""A run parked in a long wait that receives many events continues as new, and the next run resumes the wait."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from contracts.journey import (
    EVENT_SIGNAL,
    STATE_QUERY,
    WORKFLOW_NAME,
    JourneyInput,
    JourneyResult,
    JourneyState,
    workflow_id,
)
from tests.support.engine import Engine, event, journey_from, make_customer, save_history

MAIL = {"text": "hi"}
BOUND = 10
"""``JourneyInput.continue_after_signals`` for these runs: small, so a few dozen events are enough."""


def waiting_journey() -> dict[str, Any]:
    return {
        "id": "long-wait",
        "name": "Long wait",
        "trigger": {"event": "signed_up"},
        "steps": [
            {
                "id": "wait-click",
                "type": "wait_for",
                "event": "clicked",
                "since": "step",
                "timeout": "3d",
                "on_event": "thanks",
                "on_timeout": "reminder",
            },
            {
                "id": "thanks",
                "type": "send",
                "channel": "email",
                "template": {**MAIL, "subject": "thanks"},
                "next": "end",
            },
            {"id": "reminder", "type": "send", "channel": "email", "template": {**MAIL, "subject": "reminder"}},
        ],
    }


async def start(engine: Engine) -> tuple[str, str, WorkflowHandle]:
    journey = journey_from(waiting_journey())
    customer = await make_customer(engine.pool)
    trigger = event(customer, "signed_up")
    handle = await engine.client.start_workflow(
        WORKFLOW_NAME,
        JourneyInput(
            journey_id=journey.id,
            journey_version=1,
            definition=journey,
            customer_id=customer,
            trigger=trigger,
            continue_after_signals=BOUND,
        ),
        id=workflow_id(journey.id, customer),
        task_queue=engine.settings.task_queue,
        result_type=JourneyResult,
    )
    return customer, handle.id, handle


async def flood(engine: Engine, wid: str, customer: str, count: int) -> None:
    """``count`` events the wait does not care about, each to whichever run is current."""
    for _ in range(count):
        await engine.client.get_workflow_handle(wid).signal(EVENT_SIGNAL, event(customer, "page_viewed"))


async def flood_until_moved(engine: Engine, wid: str, customer: str, first_run_id: str, times: int) -> list[str]:
    """Send events in rounds of ``BOUND``; after each, wait until the run has continued as new once more."""
    chain = [first_run_id]
    for _ in range(times):
        await flood(engine, wid, customer, BOUND)
        for _poll in range(400):
            moved = await runs_of(engine, wid, first_run_id)
            if len(moved) > len(chain):
                break
            await asyncio.sleep(0.05)
        assert len(moved) == len(chain) + 1, "the waiting run did not continue as new"
        chain = moved
    return chain


async def runs_of(engine: Engine, wid: str, first_run_id: str) -> list[str]:
    """The chain of runs, first to last, following continue-as-new."""
    chain = [first_run_id]
    while True:
        history = await engine.client.get_workflow_handle(wid, run_id=chain[-1]).fetch_history()
        last = history.events[-1]
        if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            return chain
        chain.append(last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id)


async def test_many_events_during_a_wait_continue_as_new_and_the_awaited_event_still_counts(engine: Engine) -> None:
    customer, wid, handle = await start(engine)
    first_run = handle.result_run_id
    assert first_run is not None
    await engine.env.sleep(timedelta(hours=1))
    chain = await flood_until_moved(engine, wid, customer, first_run, 3)
    await engine.client.get_workflow_handle(wid).signal(EVENT_SIGNAL, event(customer, "clicked"))

    result: JourneyResult = await engine.client.get_workflow_handle(wid, result_type=JourneyResult).result()

    assert result.status == "completed"
    assert [m["Subject"] for m in engine.mail_to(customer)] == ["thanks"]
    assert await runs_of(engine, wid, first_run) == chain  # the awaited event ended the wait in the fourth run
    first = await engine.client.get_workflow_handle(wid, run_id=first_run).describe()
    assert first.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    # The wait is one visit of one step, recorded once, whatever the number of runs it spanned.
    rows = await engine.pool.fetch(
        "SELECT step_id, visit, outcome FROM step_outcomes WHERE customer_id = $1 ORDER BY id", customer
    )
    assert [(r["step_id"], r["visit"], r["outcome"]) for r in rows] == [
        ("wait-click", 1, "event"),
        ("thanks", 1, "sent"),
    ]
    await save_history(engine.client.get_workflow_handle(wid, run_id=first_run), "wait-continued-as-new")
    await save_history(engine.client.get_workflow_handle(wid, run_id=chain[1]), "wait-resumed-after-continue-as-new")


async def test_a_wait_carried_across_runs_ends_when_it_was_due(engine: Engine) -> None:
    customer, wid, handle = await start(engine)
    first_run = handle.result_run_id
    assert first_run is not None
    await engine.env.sleep(timedelta(hours=20))
    chain = await flood_until_moved(engine, wid, customer, first_run, 2)
    await engine.env.sleep(timedelta(days=3))

    result: JourneyResult = await engine.client.get_workflow_handle(wid, result_type=JourneyResult).result()

    assert result.status == "completed"
    assert [m["Subject"] for m in engine.mail_to(customer)] == ["reminder"]
    assert await runs_of(engine, wid, first_run) == chain
    state = await engine.client.get_workflow_handle(wid).query(STATE_QUERY, result_type=JourneyState)
    wait = next(s for s in state.steps_done if s.step_id == "wait-click")
    assert wait.outcome == "timeout"
    # The next runs waited for what was left of the three days, not three days each.
    assert timedelta(days=3) <= wait.finished_at - wait.started_at < timedelta(days=3, hours=1)
    assert state.steps_done_total == 2
