"""The Python client against the API served for real by uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from parcours import ParcoursClient, ParcoursClientError, ParcoursUnavailableError
from store import customers as customer_store
from store import events as event_store
from tests.support.mail import free_port
from tests.support.stack import API_KEY, make_settings

pytestmark = pytest.mark.devserver


@dataclass
class Flaky:
    """Wraps the app: answers 503 to the next ``failures`` event posts, and records every event body."""

    app: ASGIApp
    failures: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/events":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        self.bodies.append(json.loads(body))
        if self.failures > 0:
            self.failures -= 1
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"try later"})
            return

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@dataclass
class Served:
    url: str
    flaky: Flaky
    port: int


async def serve(app: ASGIApp, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return server, task


@pytest_asyncio.fixture
async def served(dev_env: WorkflowEnvironment, pool: asyncpg.Pool) -> AsyncIterator[Served]:
    flaky = Flaky(create_app(make_settings(), pool=pool, client=dev_env.client))
    port = free_port()
    server, task = await serve(flaky, port)
    try:
        yield Served(f"http://127.0.0.1:{port}", flaky, port)
    finally:
        server.should_exit = True
        await task


def fast_client(url: str, key: str = API_KEY, **kwargs: Any) -> ParcoursClient:
    return ParcoursClient(url, key, backoff_initial=0.05, backoff_max=0.2, timeout=5, **kwargs)


async def test_identify_and_track_in_batches(served: Served, pool: asyncpg.Pool) -> None:
    customer_id = f"client-{uuid.uuid4().hex[:10]}"

    def use_client() -> list[str]:
        with fast_client(served.url, batch_size=3) as parcours:
            answer = parcours.identify(customer_id, email="c@example.com", attributes={"plan": "pro"})
            assert answer["profile"]["id"] == customer_id and answer["created"] is True
            ids = [parcours.track(customer_id, "viewed", {"n": n}) for n in range(5)]
            assert parcours.pending == 2  # the first 3 went out as a full batch
        return ids

    ids = await asyncio.to_thread(use_client)
    assert [len(b["events"]) for b in served.flaky.bodies] == [3, 2]
    profile = await customer_store.get_customer(pool, customer_id)
    assert profile is not None and profile.attributes == {"plan": "pro"}
    for event_id in ids:
        stored = await event_store.get_event(pool, event_id)
        assert stored is not None and stored["customer_id"] == customer_id


async def test_a_visitor_tracked_anonymously_then_identified(served: Served, pool: asyncpg.Pool) -> None:
    tag = uuid.uuid4().hex[:10]
    visitor, customer_id = f"device-{tag}", f"client-{tag}"

    def use_client() -> tuple[list[str], dict[str, Any]]:
        with fast_client(served.url) as parcours:
            ids = [parcours.track(None, "viewed", {"n": n}, anonymous_id=visitor) for n in range(2)]
            answer = parcours.identify(
                customer_id, anonymous_ids=[visitor], aliases={"email": f"{tag}@example.com"}, source="signup"
            )
            ids.append(parcours.track(None, "viewed", {"n": 2}, anonymous_id=visitor))
        return ids, answer

    ids, answer = await asyncio.to_thread(use_client)
    # The queued events went out before the identify call, so the merge moved them.
    assert [(m["alias_kind"], m["moved"].get("events")) for m in answer["merges"]] == [
        ("anonymous_id", 2),
        ("email", None),
    ]
    for event_id in ids:
        stored = await event_store.get_event(pool, event_id)
        assert stored is not None and (stored["customer_id"], stored["anonymous_id"]) == (customer_id, visitor)
    with pytest.raises(ValueError, match="customer_id or an anonymous_id"):
        fast_client(served.url).track(None, "viewed")


async def test_retries_a_503_with_the_same_event_ids(served: Served, pool: asyncpg.Pool) -> None:
    served.flaky.failures = 2

    def use_client() -> list[dict[str, Any]]:
        with fast_client(served.url) as parcours:
            parcours.track(f"retry-{uuid.uuid4().hex[:10]}", "clicked")
            return parcours.flush()

    [result] = await asyncio.to_thread(use_client)
    assert result["status"] == "accepted"
    assert len(served.flaky.bodies) == 3
    assert len({b["events"][0]["event_id"] for b in served.flaky.bodies}) == 1  # idempotent retries


async def test_gives_up_after_max_retries_and_keeps_the_events(served: Served) -> None:
    served.flaky.failures = 100
    parcours = fast_client(served.url, max_retries=2)
    parcours.track("c-1", "clicked")
    with pytest.raises(ParcoursUnavailableError, match="3 attempts"):
        await asyncio.to_thread(parcours.flush)
    assert parcours.pending == 1
    served.flaky.failures = 0
    [result] = await asyncio.to_thread(parcours.flush)
    assert result["status"] == "accepted" and parcours.pending == 0
    await asyncio.to_thread(parcours.close)


async def test_a_4xx_is_raised_at_once(served: Served) -> None:
    parcours = fast_client(served.url, key="wrong")
    parcours.track("c-1", "clicked")
    with pytest.raises(ParcoursClientError) as info:
        await asyncio.to_thread(parcours.flush)
    assert info.value.status == 401 and info.value.field == "authorization"
    assert len(served.flaky.bodies) == 1  # not retried
    with pytest.raises(ParcoursClientError) as info:
        await asyncio.to_thread(fast_client(served.url).identify, "c-1", timezone="Nowhere/Land")
    assert info.value.status == 422 and info.value.field == "traits.timezone"


async def test_retries_until_the_server_comes_up(dev_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def use_client() -> list[dict[str, Any]]:
        with fast_client(url, max_retries=10) as parcours:
            parcours.track(f"late-{uuid.uuid4().hex[:10]}", "clicked")
            return parcours.flush()

    sending = asyncio.create_task(asyncio.to_thread(use_client))
    await asyncio.sleep(0.4)  # connection refused meanwhile
    assert not sending.done()
    server, task = await serve(create_app(make_settings(), pool=pool, client=dev_env.client), port)
    try:
        [result] = await asyncio.wait_for(sending, 10)
        assert result["status"] == "accepted"
    finally:
        server.should_exit = True
        await task
