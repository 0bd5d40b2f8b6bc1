"""The API on the real stack, in process: dev server, embedded PostgreSQL, a worker, the SMTP sink.

    from tests.support.stack import Stack, stack_fixture  # noqa: F401  (registers the fixture)

    async def test_x(stack: Stack):
        journey = stack.journey()                      # unique ids and event names
        await stack.http.post("/v1/journeys", json=journey)

``stack.http`` is an httpx client on the ASGI app with a valid API key; the event router's drainer runs for the
duration of the test (ASGITransport does not run the lifespan).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest_asyncio
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.app import create_app, run_drainer
from config.settings import Settings
from orchestration.router import EventRouter
from tests.support.mail import SmtpSink
from tests.support.temporal import task_queue
from workers.worker import build_worker, channels_for

API_KEY = "test-key"
T = TypeVar("T")


@contextlib.asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1:``port`` (lifespan on) until the block ends; yields its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "task_queue": task_queue(),
        "consent_default": "opt_in",
        "api_keys": [API_KEY],
        "otel_exporter": "none",
        "log_format": "console",
    }
    values.update(overrides)
    return Settings(**values)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Stack:
    settings: Settings
    pool: asyncpg.Pool
    client: Client
    app: FastAPI
    http: httpx.AsyncClient
    smtp: SmtpSink

    @property
    def router(self) -> EventRouter:
        return self.app.state.router  # type: ignore[no-any-return]

    def journey(self, **overrides: Any) -> dict[str, Any]:
        """A journey with unique id and event names: email, then wait up to an hour for ``done``, goal ``goal``."""
        tag = uuid.uuid4().hex[:10]
        definition: dict[str, Any] = {
            "id": f"j-{tag}",
            "name": f"Test journey {tag}",
            "trigger": {"event": f"start-{tag}"},
            "goal": {"event": f"goal-{tag}"},
            "steps": [
                {
                    "id": "hello",
                    "type": "send",
                    "channel": "email",
                    "template": {"subject": f"Hello {tag}", "text": "Welcome aboard."},
                },
                {"id": "await-done", "type": "wait_for", "event": f"done-{tag}", "timeout": "1h"},
            ],
        }
        definition.update(overrides)
        return definition

    async def customer(self, *, consent: bool = True) -> str:
        customer_id = unique("cust")
        response = await self.http.put(f"/v1/customers/{customer_id}", json={"email": f"{customer_id}@example.com"})
        assert response.status_code == 200, response.text
        if consent:
            response = await self.http.put(
                f"/v1/customers/{customer_id}/consent", json={"channels": {"email": "granted"}}
            )
            assert response.status_code == 200, response.text
        return customer_id

    async def publish(self, journey: dict[str, Any]) -> dict[str, Any]:
        """POST the journey; it must be created (201). Returns the API's answer."""
        response = await self.http.post("/v1/journeys", json=journey)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def trigger(self, customer_id: str, journey: dict[str, Any], **properties: Any) -> None:
        """Send the journey's trigger event for the customer; it must be accepted."""
        body = {"customer_id": customer_id, "name": journey["trigger"]["event"], "properties": properties}
        response = await self.http.post("/v1/events", json=body)
        assert response.json()["results"][0]["status"] == "accepted", response.text

    async def message(self, customer_id: str, journey_id: str) -> dict[str, Any]:
        """The customer's message in the journey (status, reason, recipient), once it is recorded."""

        async def found() -> Any:
            return await self.pool.fetchrow(
                "SELECT status, reason, recipient FROM messages WHERE customer_id = $1 AND journey_id = $2",
                customer_id,
                journey_id,
            )

        return dict(await eventually(found, timeout=15))


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.2) -> T:  # noqa: ASYNC109
    """Call ``check`` until it returns a truthy value without raising AssertionError; return that value."""
    deadline = asyncio.get_running_loop().time() + timeout
    value: Any = None
    while True:
        try:
            value = await check()
            if value:
                return value
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_stack(env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink) -> AsyncIterator[Stack]:
    """The API, its outbox drainer and a worker on ``pool``, for as long as the block runs."""
    settings = make_settings(smtp_host=smtp_sink.host, smtp_port=smtp_sink.port)
    app = create_app(settings, pool=pool, client=env.client)
    async with channels_for(settings, pool) as channels:
        worker = build_worker(env.client, settings, pool, channels)
        async with (
            worker,
            run_drainer(app.state.router),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://parcours.test", headers={"X-API-Key": API_KEY}
            ) as http,
        ):
            yield Stack(settings, pool, env.client, app, http, smtp_sink)


@pytest_asyncio.fixture(name="stack")
async def stack_fixture(dev_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink) -> AsyncIterator[Stack]:
    async with running_stack(dev_env, pool, smtp_sink) as stack:
        yield stack
