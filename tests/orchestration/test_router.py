"""The event router and its outbox: nothing is lost while Temporal is unreachable, nothing is routed twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.app import run_drainer
from contracts import search_attributes as sa
from contracts.journey import Event, workflow_id
from journeys.models import Journey
from orchestration import router as router_module
from orchestration.router import EventRouter
from store import events as event_store
from store import journeys as journey_store
from tests.support.mail import free_port
from tests.support.stack import eventually, make_settings
from tests.support.temporal import binary

pytestmark = pytest.mark.devserver


def make_journey(tag: str) -> Journey:
    return Journey.model_validate(
        {
            "id": f"r-{tag}",
            "name": f"Router {tag}",
            "trigger": {"event": f"start-{tag}", "where": [{"field": "plan", "op": "eq", "value": "pro"}]},
            "steps": [{"id": "wait-done", "type": "wait_for", "event": f"done-{tag}", "timeout": "1h"}],
        }
    )


def make_event(customer_id: str, name: str, **properties: object) -> Event:
    return Event(
        event_id=str(uuid.uuid4()),
        customer_id=customer_id,
        name=name,
        properties=dict(properties),
        occurred_at=datetime.now(UTC),
    )


async def unrouted_count(pool: asyncpg.Pool, ids: list[str]) -> int:
    return await pool.fetchval("SELECT count(*) FROM events WHERE event_id = ANY($1) AND routed_at IS NULL", ids)


async def test_events_arriving_while_temporal_is_down_are_all_routed_when_it_is_up(
    outbox_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router_module, "DRAIN_MAX_BACKOFF_SECONDS", 0.5)
    monkeypatch.setattr(router_module, "RPC_TIMEOUT", timedelta(seconds=1))
    tag = uuid.uuid4().hex[:10]
    journey = make_journey(tag)
    await journey_store.publish(outbox_pool, journey)
    port = free_port()
    # Nothing listens on the port yet: a lazy client connects on first use, and keeps trying.
    client = await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter, lazy=True)
    settings = make_settings()
    router = EventRouter(outbox_pool, client, settings)

    customers = [f"down-{tag}-{i}" for i in range(5)]
    triggers = [make_event(c, journey.trigger.event, plan="pro") for c in customers]
    filtered = make_event(customers[0], journey.trigger.event, plan="free")  # the trigger's where says no
    listened = [make_event(c, f"done-{tag}") for c in customers[:2]]
    async with run_drainer(router):
        first = await router.ingest(triggers[:3])
        second = await router.ingest([*triggers[3:], filtered, *listened])  # straight to the outbox now
        outcomes = first + second
        assert [o.status for o in outcomes] == ["accepted"] * 8
        assert not any(o.routed for o in outcomes)
        ids = [e.event_id for e in [*triggers, filtered, *listened]]
        assert await unrouted_count(outbox_pool, ids) == 8
        await asyncio.sleep(1.0)  # the drainer fails and backs off meanwhile

        env = await WorkflowEnvironment.start_local(
            port=port,
            data_converter=pydantic_data_converter,
            dev_server_existing_path=binary("temporal"),
            search_attributes=list(sa.ALL),
            ui=False,
        )
        try:

            async def all_routed() -> bool:
                return await unrouted_count(outbox_pool, ids) == 0

            await eventually(all_routed, timeout=20)
            for customer_id in customers:
                handle = env.client.get_workflow_handle(workflow_id(journey.id, customer_id))
                description = await handle.describe()
                assert description.status == WorkflowExecutionStatus.RUNNING
                assert description.typed_search_attributes.get(sa.CUSTOMER_ID) == customer_id
            # The first two customers got their trigger and, after it, the listened event (in order).
            history = await env.client.get_workflow_handle(workflow_id(journey.id, customers[0])).fetch_history()
            signals = [e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")]
            # The trigger is the run's input; the listened event reached it afterwards, as the one signal.
            assert len(signals) == 1
            signalled = signals[0].workflow_execution_signaled_event_attributes.input.payloads[0].data
            assert listened[0].event_id.encode() in signalled
            stored = await event_store.get_event(outbox_pool, triggers[0].event_id)
            assert stored is not None and stored["route_attempts"] >= 1 and stored["route_error"] is None
        finally:
            await env.shutdown()


async def test_drainer_picks_up_events_a_crashed_process_left_unrouted(
    outbox_pool: asyncpg.Pool, dev_env: WorkflowEnvironment
) -> None:
    tag = uuid.uuid4().hex[:10]
    journey = make_journey(tag)
    await journey_store.publish(outbox_pool, journey)
    events = [make_event(f"crash-{tag}-{i}", journey.trigger.event, plan="pro") for i in range(3)]
    # Stored, never routed, no attempt recorded: what a process that died between the two leaves behind.
    assert await event_store.store_events(outbox_pool, events) == [True, True, True]
    router = EventRouter(outbox_pool, dev_env.client, make_settings())
    assert await router.drain_once() == (0, 0)  # too young: the storing process may be routing them
    assert await router.drain_once(min_age=timedelta(0)) == (3, 0)
    assert await router.drain_once(min_age=timedelta(0)) == (0, 0)
    for event in events:
        description = await dev_env.client.get_workflow_handle(workflow_id(journey.id, event.customer_id)).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING


async def test_route_reports_started_and_signalled_and_ignores_customers_not_in_the_journey(
    pool: asyncpg.Pool, dev_env: WorkflowEnvironment
) -> None:
    tag = uuid.uuid4().hex[:10]
    journey = make_journey(tag)
    await journey_store.publish(pool, journey)
    router = EventRouter(pool, dev_env.client, make_settings())
    await router.refresh()
    customer = f"route-{tag}"
    result = await router.route(make_event(customer, journey.trigger.event, plan="pro"))
    assert result.started == [workflow_id(journey.id, customer)] and result.signalled == []
    again = await router.route(make_event(customer, journey.trigger.event, plan="pro"))
    assert again.started == [workflow_id(journey.id, customer)]  # running: just signalled
    listened = await router.route(make_event(customer, f"done-{tag}"))
    assert listened.signalled == [workflow_id(journey.id, customer)]
    nobody = await router.route(make_event(f"other-{tag}", f"done-{tag}"))
    assert nobody.started == [] and nobody.signalled == []


async def test_a_stored_definition_that_no_longer_parses_leaves_every_other_journey_routing(
    pool: asyncpg.Pool, dev_env: WorkflowEnvironment
) -> None:
    tag = uuid.uuid4().hex[:10]
    # A row this release cannot read (written by hand, or by an older release's language).
    await pool.execute(
        "INSERT INTO journeys (id, name, latest_version, trigger_event) VALUES ($1, 'Broken', 1, $2)",
        f"broken-{tag}",
        f"start-{tag}",
    )
    await pool.execute(
        "INSERT INTO journey_versions (journey_id, version, definition, checksum) VALUES ($1, 1, $2, 'x')",
        f"broken-{tag}",
        {"steps": [{"id": "no-type"}]},
    )
    journey = make_journey(tag)
    await journey_store.publish(pool, journey)
    router = EventRouter(pool, dev_env.client, make_settings())
    await router.refresh()
    customer = f"route-{tag}"
    result = await router.route(make_event(customer, journey.trigger.event, plan="pro"))
    assert result.started == [workflow_id(journey.id, customer)]
    assert (await router.route(make_event(customer, f"done-{tag}"))).signalled == [workflow_id(journey.id, customer)]
    await pool.execute("UPDATE journeys SET status = 'archived' WHERE id = $1", f"broken-{tag}")
