"""Re-entry policies: recorded entries, decided atomically, enforced where entries happen (the router)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from temporalio.client import WorkflowExecutionStatus

from contracts.journey import JourneyResult, workflow_id
from journeys.models import EntryPolicy
from orchestration.router import EventRouter
from store import entries as entry_store
from store import journeys as journey_store
from tests.support.engine import Engine, event, journey_from, make_customer

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def ids() -> tuple[str, str]:
    return f"j-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"


async def test_always_records_every_entry_and_a_retried_entry_is_the_same_one(pool: asyncpg.Pool) -> None:
    journey_id, customer_id = ids()
    policy = EntryPolicy()
    first = await entry_store.claim_entry(pool, journey_id, customer_id, "e1", 1, policy, T0)
    again = await entry_store.claim_entry(pool, journey_id, customer_id, "e1", 1, policy, T0 + timedelta(1))
    second = await entry_store.claim_entry(pool, journey_id, customer_id, "e2", 2, policy, T0 + timedelta(2))
    assert (first.allowed, first.new) == (True, True)
    assert (again.allowed, again.new) == (True, False)
    assert (second.allowed, second.new) == (True, True)
    rows = await entry_store.entries(pool, journey_id, customer_id)
    assert [(r["entry_id"], r["version"], r["entered_at"]) for r in rows] == [
        ("e1", 1, T0),
        ("e2", 2, T0 + timedelta(2)),
    ]
    await entry_store.release_entry(pool, journey_id, customer_id, "e2")
    assert [r["entry_id"] for r in await entry_store.entries(pool, journey_id, customer_id)] == ["e1"]


async def test_once_lets_a_customer_in_once_ever_but_a_retry_of_that_entry_is_allowed(pool: asyncpg.Pool) -> None:
    journey_id, customer_id = ids()
    policy = EntryPolicy(reentry="once")
    assert await entry_store.claim_entry(pool, journey_id, customer_id, "e1", 1, policy, T0)
    assert await entry_store.claim_entry(pool, journey_id, customer_id, "e1", 1, policy, T0)  # the same entry
    refused = await entry_store.claim_entry(pool, journey_id, customer_id, "e2", 1, policy, T0 + timedelta(days=400))
    assert not refused and refused.reason == "reentry_once"
    other_id, _ = ids()
    assert await entry_store.claim_entry(pool, other_id, customer_id, "e2", 1, policy, T0)  # another journey


async def test_cooldown_counts_from_the_previous_entry(pool: asyncpg.Pool) -> None:
    journey_id, customer_id = ids()
    policy = EntryPolicy(reentry="cooldown", cooldown="7d")
    assert await entry_store.claim_entry(pool, journey_id, customer_id, "e1", 1, policy, T0)
    early = await entry_store.claim_entry(pool, journey_id, customer_id, "e2", 1, policy, T0 + timedelta(days=6))
    assert not early and early.reason == "cooldown"
    assert await entry_store.claim_entry(pool, journey_id, customer_id, "e3", 1, policy, T0 + timedelta(days=7))
    assert not await entry_store.claim_entry(pool, journey_id, customer_id, "e4", 1, policy, T0 + timedelta(days=13))
    assert await entry_store.claim_entry(pool, journey_id, customer_id, "e5", 1, policy, T0 + timedelta(days=14))


async def test_concurrent_claims_let_a_once_customer_in_exactly_once(pool: asyncpg.Pool) -> None:
    journey_id, customer_id = ids()
    policy = EntryPolicy(reentry="once")
    claims = await asyncio.gather(
        *(entry_store.claim_entry(pool, journey_id, customer_id, f"e{i}", 1, policy, T0) for i in range(8))
    )
    assert sum(c.allowed for c in claims) == 1
    assert len(await entry_store.entries(pool, journey_id, customer_id)) == 1


async def test_router_enforces_once_and_signals_a_running_customer(
    engine: Engine,
) -> None:
    signed_up = f"signed_up-{uuid.uuid4().hex[:8]}"  # journeys of other tests stay published
    short = journey_from(
        {
            "id": "once",
            "name": "Once",
            "trigger": {"event": signed_up},
            "entry": {"reentry": "once"},
            "steps": [{"id": "hi", "type": "send", "channel": "email", "template": {"subject": "Hi", "text": "x"}}],
        }
    )
    long = journey_from(
        {
            "id": "always",
            "name": "Always",
            "trigger": {"event": signed_up},
            "steps": [{"id": "nap", "type": "wait", "duration": "1d"}],
        }
    )
    for journey in (short, long):
        await journey_store.publish(engine.pool, journey)
    router = EventRouter(engine.pool, engine.client, engine.settings)
    await router.refresh()
    customer_id = await make_customer(engine.pool)

    first = await router.route(event(customer_id, signed_up))
    assert set(first.started) == {workflow_id(short.id, customer_id), workflow_id(long.id, customer_id)}
    once = engine.client.get_workflow_handle(workflow_id(short.id, customer_id), result_type=JourneyResult)
    assert (await once.result()).status == "completed"

    second = await router.route(event(customer_id, signed_up))
    assert second.refused == [workflow_id(short.id, customer_id)]
    assert second.started == [workflow_id(long.id, customer_id)]  # still running: just signalled
    assert len(await entry_store.entries(engine.pool, short.id, customer_id)) == 1
    # The trigger that only reached the running run is not an entry: the start was refused, so the claim went.
    assert len(await entry_store.entries(engine.pool, long.id, customer_id)) == 1
    assert len(engine.mail_to(customer_id)) == 1
    latest = await engine.client.get_workflow_handle(once.id).describe()
    assert latest.status == WorkflowExecutionStatus.COMPLETED  # no second run
    # Leave nothing running on this test's task queue: its worker goes away, and a timer firing later with no
    # worker to take the task would stall time skipping for the tests that follow.
    await engine.client.get_workflow_handle(workflow_id(long.id, customer_id)).terminate("test over")
