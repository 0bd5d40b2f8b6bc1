"""Scheduled segment entry: the SegmentEntryWorkflow and its schedule (membership SQL: tests/store/test_segments.py)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from temporalio.client import ScheduleIntervalSpec
from temporalio.service import RPCError

from contracts.journey import JourneyState, workflow_id
from contracts.segment import SEGMENT_WORKFLOW_NAME, SegmentRunInput, SegmentRunResult
from journeys.models import Segment
from store import entries as entry_store
from store import journeys as journey_store
from store import segments as segment_store
from tests.support.engine import Engine, journey_from, make_customer
from tests.support.stack import Stack, eventually, stack_fixture  # noqa: F401  (registers the fixture)
from workflows.segment import SegmentEntryWorkflow


async def add_event(
    pool: asyncpg.Pool, customer_id: str, name: str, now: datetime, days_ago: float, **properties: Any
) -> None:
    await pool.execute(
        "INSERT INTO events (event_id, customer_id, name, properties, occurred_at, routed_at) "
        "VALUES ($1, $2, $3, $4, $5, now())",
        f"ev-{uuid.uuid4().hex}",
        customer_id,
        name,
        properties,
        now - timedelta(days=days_ago),
    )


def win_back(cohort: str, *, wait: bool = True, **entry: Any) -> dict[str, Any]:
    nap = [{"id": "nap", "type": "wait", "duration": "30d"}] if wait else []
    return {
        "id": "win-back",
        "name": "Win-back",
        "entry": {
            "segment": {
                "every": "1d",
                "where": [
                    {"field": "profile.cohort", "op": "eq", "value": cohort},
                    {"field": "profile.country", "op": "in", "value": ["FR", "BE"]},
                ],
                "events": [{"event": "order_placed", "within": "60d", "count": "none"}],
                "batch_size": 3,
                "max_per_second": 10,
            },
            **entry,
        },
        "steps": [
            *nap,
            {"id": "miss-you", "type": "send", "channel": "email", "template": {"subject": "We miss you", "text": "x"}},
        ],
    }


async def test_segment_run_enters_exactly_the_members_once_at_a_bounded_rate(engine: Engine) -> None:
    # The test server skips time while activities run (it cannot see them), which would fire the journeys'
    # 30-day waits: run on its clock without skipping. Pacing is checked on workflow time all the same.
    with engine.env.auto_time_skipping_disabled():
        journey_id, customers = await _segment_runs(engine)
    # Leave nothing running on this test's task queue (its worker goes away; a timer firing with no worker to
    # take the task would stall time skipping for the tests that follow).
    for customer_id in customers:
        await engine.client.get_workflow_handle(workflow_id(journey_id, customer_id)).terminate("test over")


async def _segment_runs(engine: Engine) -> tuple[str, list[str]]:
    pool, cohort = engine.pool, uuid.uuid4().hex[:8]
    now = await engine.env.get_current_time()  # the server's clock may be ahead after earlier tests' skips

    async def customer(country: str) -> str:
        return await make_customer(pool, attributes={"cohort": cohort, "country": country})

    lapsed = [await customer("FR"), await customer("BE"), await customer("FR"), await customer("BE")]
    recent_buyer = await customer("FR")
    await add_event(pool, recent_buyer, "order_placed", now, days_ago=10)
    old_buyer = await customer("BE")  # bought, but 90 days ago: lapsed too
    await add_event(pool, old_buyer, "order_placed", now, days_ago=90)
    await add_event(pool, lapsed[0], "cart_abandoned", now, days_ago=1)  # other events do not count
    elsewhere = await customer("DE")
    members = sorted([*lapsed, old_buyer])

    segment = Segment.model_validate(win_back(cohort)["entry"]["segment"])
    page = await segment_store.member_page(pool, segment, now, after=None, limit=100)
    assert page == members and recent_buyer not in page and elsewhere not in page

    always = journey_from(win_back(cohort))
    once = journey_from(win_back(cohort, wait=False, reentry="once"))  # ends at once
    for journey in (always, once):
        await journey_store.publish(pool, journey)

    async def run(journey_id: str, key: str) -> SegmentRunResult:
        return await engine.client.execute_workflow(
            SegmentEntryWorkflow.run,
            SegmentRunInput(journey_id=journey_id, version=1, run_key=key),
            id=f"segment:{journey_id}-{key}",
            task_queue=engine.settings.task_queue,
            result_type=SegmentRunResult,
        )

    first = await run(always.id, "day-1")
    assert (first.members, first.entered, first.refused, first.already_running) == (5, 5, 0, 0)
    rows = await entry_store.entries(pool, always.id)
    assert sorted(r["customer_id"] for r in rows) == members
    assert {r["entry_id"] for r in rows} == {f"segment:{always.id}:day-1:{c}" for c in members}
    # Paced on workflow time (entered_at is the batch's workflow.now()): pages of 3 at 10 per second, so at
    # most 3 enter at one instant and the next batch starts at least 0.3 s later.
    batches = Counter(r["entered_at"] for r in rows)
    assert sorted(batches.values()) == [2, 3]
    first_batch, second_batch = sorted(batches)
    assert second_batch - first_batch >= timedelta(seconds=0.3)
    for customer_id in members:
        state = await engine.client.get_workflow_handle(workflow_id(always.id, customer_id)).query(
            "state", result_type=JourneyState
        )
        assert state.status == "running" and state.entry_id == f"segment:{always.id}:day-1:{customer_id}"

    # Run again: everyone is still in the journey (always), or has been in it (once): nobody new enters.
    assert (await run(once.id, "day-1")).entered == 5
    for customer_id in members:
        await engine.client.get_workflow_handle(workflow_id(once.id, customer_id)).result()
    second = await run(always.id, "day-2")
    assert (second.members, second.entered, second.already_running) == (5, 0, 5), second
    assert len(await entry_store.entries(pool, always.id)) == 5
    once_again = await run(once.id, "day-2")
    assert (once_again.entered, once_again.refused) == (0, 5), once_again
    assert len(await entry_store.entries(pool, once.id)) == 5
    assert all(len(engine.mail_to(c)) == 1 for c in members)

    # A paused journey takes no segment entries.
    await journey_store.set_status(pool, once.id, "paused")
    paused = await run(once.id, "day-3")
    assert (paused.members, paused.entered, paused.stopped) == (0, 0, "journey paused")
    return always.id, members


def segment_journey(stack: Stack, cohort: str, **segment: Any) -> dict[str, Any]:
    journey = stack.journey()
    journey.pop("trigger")
    journey["entry"] = {
        "segment": {"every": "1d", "where": [{"field": "profile.cohort", "op": "eq", "value": cohort}], **segment}
    }
    return journey


@pytest.mark.devserver
async def test_publishing_a_segment_journey_creates_its_schedule_and_pause_resume_archive_follow(
    stack: Stack,
) -> None:
    cohort = uuid.uuid4().hex[:8]
    customer_id = await stack.customer()
    await stack.http.put(f"/v1/customers/{customer_id}", json={"attributes": {"cohort": cohort}})
    journey = segment_journey(stack, cohort)

    bad = await stack.http.post("/v1/journeys", json=segment_journey(stack, cohort, every=None, cron="61 * * * *"))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "entry.segment.cron", bad.text
    assert "minute '61'" in bad.json()["error"]["message"]

    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    handle = stack.client.get_schedule_handle(f"segment:{journey['id']}")
    described = await handle.describe()
    assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(days=1))]
    action = described.schedule.action
    assert action.workflow == SEGMENT_WORKFLOW_NAME and action.task_queue == stack.settings.task_queue  # type: ignore[attr-defined]
    assert action.id == f"segment:{journey['id']}"  # type: ignore[attr-defined]
    assert not described.schedule.state.paused

    # Fire it now: the member enters the journey (and gets its email).
    await handle.trigger()
    await stack.smtp.wait_for(1, timeout=15)
    [entry] = await entry_store.entries(stack.pool, journey["id"], customer_id)
    assert entry["source"] == "segment" and entry["entry_id"].startswith(f"segment:{journey['id']}:")

    assert (await stack.http.post(f"/v1/journeys/{journey['id']}/pause")).status_code == 200
    assert (await handle.describe()).schedule.state.paused
    assert (await stack.http.post(f"/v1/journeys/{journey['id']}/resume")).status_code == 200
    assert not (await handle.describe()).schedule.state.paused

    weekly = segment_journey(stack, cohort, every=None, cron="0 9 * * 1")
    response = await stack.http.post("/v1/journeys", json={**weekly, "id": journey["id"]})
    assert response.status_code == 201 and response.json()["version"] == 2
    spec = (await handle.describe()).schedule.spec
    assert (spec.intervals == [] and spec.cron_expressions == ["0 9 * * 1"]) or spec.calendars, spec

    archived = await stack.http.post(f"/v1/journeys/{journey['id']}/archive")
    assert archived.status_code == 200 and archived.json()["schedule"] == "deleted", archived.text
    assert archived.json()["exited"] == 1 and archived.json()["status"] == "archived"
    with pytest.raises(RPCError):
        await handle.describe()
    assert (await stack.http.post("/v1/journeys/nope/archive")).status_code == 404


@pytest.mark.devserver
async def test_a_trigger_that_only_signals_a_running_customer_is_not_recorded_as_an_entry(stack: Stack) -> None:
    journey = stack.journey()
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    customer_id = await stack.customer()
    for _ in range(2):
        response = await stack.http.post(
            "/v1/events", json={"customer_id": customer_id, "name": journey["trigger"]["event"]}
        )
        assert response.json()["results"][0]["routed"] is True

    async def one_entry() -> bool:
        rows = await entry_store.entries(stack.pool, journey["id"], customer_id)
        assert len(rows) == 1, rows
        return True

    await eventually(one_entry)
