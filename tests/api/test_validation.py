"""The validation processes: a check that runs too long is stopped (and its process serves the next one), a full
queue is refused at once, a process stuck where the timer cannot reach is killed and replaced, and the API answers
each with a 4xx naming the body (issue 11: hostile publishes must not slow anyone else)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from api import validation
from api.app import create_app
from api.validation import Busy, TooSlow, ValidationPool
from tests.support.stack import make_settings, unique

KEY = {"X-API-Key": "test-key"}


@pytest_asyncio.fixture
async def one_process() -> AsyncIterator[ValidationPool]:
    pool = ValidationPool(validation._Config(processes=1, threads=1, timeout=0.5, queue=0))
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_check_past_its_time_limit_is_stopped_and_the_process_serves_the_next(
    one_process: ValidationPool,
) -> None:
    with pytest.raises(TooSlow) as caught:
        await one_process.run(time.sleep, 30)
    assert caught.value.seconds == 0.5
    assert await one_process.run(len, "still here") == 10


async def test_a_full_queue_is_refused_at_once_with_when_to_retry(one_process: ValidationPool) -> None:
    busy = asyncio.create_task(one_process.run(time.sleep, 0.4))
    await asyncio.sleep(0)  # the first call holds the only process
    with pytest.raises(Busy) as caught:
        await one_process.run(len, "x")
    assert caught.value.retry_after >= 1
    await busy
    assert await one_process.run(len, "x") == 1  # free again


async def test_a_process_the_timer_cannot_stop_is_killed_and_the_pool_replaced(
    one_process: ValidationPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ValidationPool, "hard_limit", 2.0)
    # One C call that never returns to the interpreter, so the timer's handler cannot run (minutes of work).
    with pytest.raises(TooSlow):
        await one_process.run(sum, range(10**12))
    assert await one_process.run(len, "fresh") == 5


async def test_errors_raised_in_the_process_arrive_whole(one_process: ValidationPool) -> None:
    from journeys.validation import JourneyValidationError, parse_journey

    with pytest.raises(JourneyValidationError) as caught:
        await one_process.run(parse_journey, '{"id": "x", "name": "x", "trigger": {"event": "e"}, "steps": [{}]}')
    assert caught.value.issues and caught.value.issues[0].location.startswith("steps[0]")


def big_journey() -> dict[str, Any]:
    html = "<p>{{ event.x | upcase }} {% if customer.first_name %}{{ customer.first_name }}{% endif %}</p>" * 10
    return {
        "id": unique("big"),
        "name": "Big",
        "trigger": {"event": unique("e")},
        "steps": [
            {"id": f"s{i}", "type": "send", "channel": "email", "template": {"subject": "Hi", "html": html}}
            for i in range(150)
        ],
    }


@pytest_asyncio.fixture
async def app_with(dev_env: WorkflowEnvironment, pool: asyncpg.Pool) -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []
    before = set(validation._shared)

    async def make(**overrides: Any) -> httpx.AsyncClient:
        app = create_app(make_settings(**overrides), pool=pool, client=dev_env.client)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=KEY)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for config in set(validation._shared) - before:  # the pools these apps started on first use
        await validation._shared.pop(config).close()


@pytest.mark.devserver
async def test_a_publish_that_takes_too_long_to_check_is_422_naming_the_body(app_with: Any) -> None:
    http = await app_with(validation_timeout_seconds=0.001)
    response = await http.post("/v1/journeys", content=json.dumps(big_journey()))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "body" and "PARCOURS_VALIDATION_TIMEOUT_SECONDS" in error["message"]


@pytest.mark.devserver
async def test_publishes_beyond_the_queue_are_429_with_retry_after_and_the_rest_publish(app_with: Any) -> None:
    http = await app_with(validation_processes=1, validation_queue=0, validation_timeout_seconds=300)
    responses = await asyncio.gather(*(http.post("/v1/journeys", content=json.dumps(big_journey())) for _ in range(3)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 201 and 429 in statuses, [r.text for r in responses]
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1 and refused.json()["error"]["field"] == "body"


@pytest.mark.devserver
async def test_a_publish_is_validated_in_a_process_and_in_threads_alike(app_with: Any) -> None:
    definition = big_journey()
    definition["steps"][3]["next"] = "nowhere"
    for processes in (1, 0):
        http = await app_with(validation_processes=processes)
        response = await http.post("/v1/journeys", content=json.dumps(definition))
        assert response.status_code == 422, response.text
        assert "unknown step 'nowhere'" in response.json()["error"]["message"]
