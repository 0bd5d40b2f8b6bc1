"""One run refusing events (a poisoned customer) never slows the others: its events become dead letters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from contracts.journey import workflow_id
from orchestration.errors import RunRefusedError
from orchestration.router import EventRouter
from orchestration.runs import JourneyRuns
from store import events as event_store
from tests.support.stack import API_KEY, make_settings

pytestmark = pytest.mark.devserver

SIGNAL_LIMIT = "exceeded workflow execution limit for signal events"


@dataclass(frozen=True)
class RefusingRuns(JourneyRuns):
    """The real calls, except that the runs in ``refuse`` answer every signal as a run past its signal limit."""

    refuse: frozenset[str] = frozenset()

    async def signal(self, wid: str, signal: str, arg: Any, *, run_id: str | None = None) -> bool:
        if wid in self.refuse:

            async def refused() -> None:
                raise RPCError(SIGNAL_LIMIT, RPCStatusCode.INVALID_ARGUMENT, b"")

            try:
                await self.call(refused())
            except RunRefusedError as exc:
                exc.workflow_id = wid
                raise
        return await super().signal(wid, signal, arg, run_id=run_id)


async def signals_of(env: WorkflowEnvironment, wid: str) -> int:
    history = await env.client.get_workflow_handle(wid).fetch_history()
    return sum(1 for e in history.events if e.HasField("workflow_execution_signaled_event_attributes"))


async def test_a_poisoned_run_gets_dead_letters_and_everyone_else_keeps_routing(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    tag = uuid.uuid4().hex[:10]
    settings = make_settings()
    app = create_app(settings, pool=pool, client=dev_env.client)
    router: EventRouter = app.state.router
    journey = {
        "id": f"poison-{tag}",
        "name": f"Poison {tag}",
        "trigger": {"event": f"start-{tag}"},
        "steps": [{"id": "wait-done", "type": "wait_for", "event": f"done-{tag}", "timeout": "1h"}],
    }
    poisoned, healthy = f"poisoned-{tag}", f"healthy-{tag}"
    poisoned_wid, healthy_wid = workflow_id(journey["id"], poisoned), workflow_id(journey["id"], healthy)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"X-API-Key": API_KEY}
    ) as api:
        published = await api.post("/v1/journeys", json=journey)
        assert published.status_code == 201, published.text
        started = await api.post(
            "/v1/events", json={"events": [{"customer_id": c, "name": f"start-{tag}"} for c in (poisoned, healthy)]}
        )
        assert [r["routed"] for r in started.json()["results"]] == [True, True]

        router._runs = RefusingRuns(**{**vars(router._runs), "refuse": frozenset({poisoned_wid})})
        bad = await api.post(
            "/v1/events", json={"customer_id": poisoned, "name": f"done-{tag}", "event_id": f"bad-{tag}"}
        )
        good = await api.post("/v1/events", json={"customer_id": healthy, "name": f"done-{tag}"})
        assert bad.status_code == good.status_code == 202
        assert bad.json()["results"][0]["routed"] is False
        # The refusal concerned one run: routing goes on at once for the others (no "Temporal unavailable").
        assert good.json()["results"][0]["routed"] is True
        assert router._degraded is False
        assert await signals_of(dev_env, healthy_wid) == 1

        listed = await api.get("/v1/events/dead-letters")
        assert listed.status_code == 200
        [letter] = [d for d in listed.json() if d["event_id"] == f"bad-{tag}"]
        assert (letter["reason"], letter["workflow_id"], letter["customer_id"]) == (
            "signal_limit",
            poisoned_wid,
            poisoned,
        )
        assert SIGNAL_LIMIT in letter["detail"]
        # Out of the outbox: the drainer never picks it up again and is never held by it.
        assert f"bad-{tag}" not in {e.event_id for e in await event_store.unrouted(pool, 10_000)}

        # The poisoned customer's later events for other runs are not held behind it either.
        later = await api.post("/v1/events", json={"customer_id": poisoned, "name": f"start-other-{tag}"})
        assert later.json()["results"][0]["routed"] is True

        # Once the run accepts signals again (an operator reset it), the dead letter is retried.
        router._runs = JourneyRuns(**{k: v for k, v in vars(router._runs).items() if k != "refuse"})
        retried = await api.post(f"/v1/events/dead-letters/bad-{tag}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json() == {"event_id": f"bad-{tag}", "customer_id": poisoned, "routed": True}
        assert await signals_of(dev_env, poisoned_wid) == 1
        assert all(d["event_id"] != f"bad-{tag}" for d in (await api.get("/v1/events/dead-letters")).json())
        missing = await api.post(f"/v1/events/dead-letters/bad-{tag}/retry")
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "event_id"


async def test_events_in_backoff_do_not_hold_the_outbox(outbox_pool: asyncpg.Pool) -> None:
    """Fairness: the failing events of one customer wait for their next attempt; everyone else's go first, and the
    customer's own later events wait behind them (order per customer)."""
    from datetime import UTC, datetime

    from contracts.journey import Event

    tag = uuid.uuid4().hex[:10]

    def event(customer: str, n: int) -> Event:
        return Event(
            event_id=f"fair-{tag}-{customer}-{n}",
            customer_id=f"{customer}-{tag}",
            name="x",
            occurred_at=datetime.now(UTC),
        )

    failing = [event("failing", n) for n in range(3)]
    other = event("other", 0)
    await event_store.store_events(outbox_pool, [*failing, other])
    for e in failing[:1]:
        await event_store.mark_route_failed(outbox_pool, e.event_id, "boom", backoff_seconds=60, max_backoff_seconds=60)
    due = {e.event_id for e in await event_store.unrouted(outbox_pool, 10_000)}
    assert other.event_id in due
    assert not due & {e.event_id for e in failing}
