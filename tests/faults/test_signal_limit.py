"""A run at the real dev server's per-run signal limit: its refused events become dead letters for that run only,
and everyone else's events keep routing (issue 11, class 3; the fake in tests/orchestration/test_router_dead_letters
only imitates the server's answer, this checks the server's own).

The dev server runs with ``history.maximumSignalsPerExecution`` lowered to 20, so the limit is reached in seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from contracts import search_attributes as sa
from contracts.journey import workflow_id
from tests.support.mail import SmtpSink
from tests.support.stack import API_KEY, make_settings
from tests.support.temporal import binary
from workers.worker import build_worker, channels_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

SIGNAL_LIMIT = 20


@pytest_asyncio.fixture
async def limited_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=binary("temporal"),
        search_attributes=list(sa.ALL),
        dev_server_extra_args=[
            "--dynamic-config-value",
            f"history.maximumSignalsPerExecution={SIGNAL_LIMIT}",
        ],
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def test_a_run_past_the_servers_signal_limit_gets_dead_letters_and_the_others_keep_routing(
    limited_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:10]
    settings = make_settings(smtp_host=smtp_sink.host, smtp_port=smtp_sink.port)
    app = create_app(settings, pool=pool, client=limited_env.client)
    journey = {
        "id": f"limit-{tag}",
        "name": f"Limit {tag}",
        "trigger": {"event": f"start-{tag}"},
        # Waits for a "done" with ok = 1; every other "done" is a signal the run takes and keeps waiting.
        "steps": [
            {
                "id": "wait-done",
                "type": "wait_for",
                "event": f"done-{tag}",
                "where": [{"field": "event.ok", "op": "eq", "value": 1}],
                "timeout": "1h",
            }
        ],
    }
    noisy, quiet = f"noisy-{tag}", f"quiet-{tag}"
    async with (
        channels_for(settings, pool) as channels,
        build_worker(limited_env.client, settings, pool, channels),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"X-API-Key": API_KEY}
        ) as api,
    ):
        assert (await api.post("/v1/journeys", json=journey)).status_code == 201
        started = await api.post(
            "/v1/events", json={"events": [{"customer_id": c, "name": f"start-{tag}"} for c in (noisy, quiet)]}
        )
        assert [r["routed"] for r in started.json()["results"]] == [True, True], started.text

        noise = [
            {"customer_id": noisy, "name": f"done-{tag}", "event_id": f"n{i}-{tag}", "properties": {"ok": 0}}
            for i in range(SIGNAL_LIMIT + 5)
        ]
        answered = await api.post("/v1/events", json={"events": noise})
        assert answered.status_code == 202, answered.text
        routed = [r["routed"] for r in answered.json()["results"]]
        refused = [e["event_id"] for e, ok in zip(noise, routed, strict=True) if not ok]
        assert refused, "the server never refused a signal"
        assert all(routed[: SIGNAL_LIMIT - 2])  # the run took signals up to its limit

        # The refusal concerned that run: the quiet customer's event is routed at once.
        done = await api.post("/v1/events", json={"customer_id": quiet, "name": f"done-{tag}", "properties": {"ok": 1}})
        assert done.json()["results"][0]["routed"] is True
        assert app.state.router._degraded is False

        letters = {d["event_id"]: d for d in (await api.get("/v1/events/dead-letters")).json()}
        assert set(refused) <= set(letters)
        for event_id in refused:
            letter = letters[event_id]
            assert (letter["reason"], letter["workflow_id"], letter["customer_id"]) == (
                "signal_limit",
                workflow_id(journey["id"], noisy),
                noisy,
            ), letter
        assert not {d for d in letters if d.endswith(tag) and not d.startswith("n")}  # nobody else's
