"""API keys have roles: a read key reads, and is refused (403 naming the role) where writing or erasing is needed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest_asyncio
from fastapi.routing import APIRoute, _IncludedRouter
from starlette.routing import BaseRoute
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from config.settings import Settings

READER, WRITER, ADMIN, OLD = "reader-key", "writer-key", "admin-key", "old-form-key"

# Routes without an API key: the token in the path (or nothing) is the credential.
PUBLIC = {"/healthz", "/readyz", "/preferences/{token}", "/v1/unsubscribe/{token}", "/c/{token}", "/o/{token}"}
# Provider callbacks: the provider's signature over the request is the credential (403 without it).
SIGNED = {"/v1/providers/twilio/status", "/v1/providers/twilio/inbound", "/v1/providers/sms/inbound"}
# Signing in and out, the console's front door, and the API documentation need no key.
SIGN_IN = {"/console", "/console/login", "/console/logout", "/docs"}
# /metrics needs a read key unless PARCOURS_METRICS_PUBLIC: its role depends on a setting, so it checks in the handler
# (tests/api/test_routes_metrics.py refuses it without a key).
IN_HANDLER = {"/metrics"}


def role_settings() -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        api_keys=[
            {"key": READER, "role": "read"},
            {"key": WRITER, "role": "write"},
            {"key": ADMIN, "role": "admin"},
            OLD,  # the former list form: an admin key
        ],
    )


@pytest_asyncio.fixture
async def api(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(role_settings(), pool=pool, client=time_skipping_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http


async def test_a_read_key_reads_but_cannot_write_erase_or_lift(api: httpx.AsyncClient) -> None:
    customer = f"roles-{uuid.uuid4().hex[:10]}"
    created = await api.put(
        f"/v1/customers/{customer}", json={"email": f"{customer}@example.com"}, headers={"X-API-Key": WRITER}
    )
    assert created.status_code == 200, created.text

    read = await api.get(f"/v1/customers/{customer}", headers={"Authorization": f"Bearer {READER}"})
    assert read.status_code == 200 and read.json()["email"] == f"{customer}@example.com"

    refused = [
        await api.put(f"/v1/customers/{customer}", json={"locale": "fr"}, headers={"X-API-Key": READER}),
        await api.post("/v1/events", json={"customer_id": customer, "name": "x"}, headers={"X-API-Key": READER}),
        await api.delete(f"/v1/customers/{customer}", headers={"X-API-Key": READER}),
        await api.delete(f"/v1/customers/{customer}", headers={"X-API-Key": WRITER}),
        await api.get(f"/v1/customers/{customer}/export", headers={"X-API-Key": READER}),
        await api.delete(
            "/v1/suppressions", params={"channel": "email", "address": "a@example.com"}, headers={"X-API-Key": READER}
        ),
        await api.delete(
            "/v1/suppressions", params={"channel": "email", "address": "a@example.com"}, headers={"X-API-Key": WRITER}
        ),
    ]
    for response in refused:
        assert response.status_code == 403, (response.request.method, response.request.url, response.text)
        error = response.json()["error"]
        assert error["field"] == "authorization"
        assert "this route needs the role" in error["message"]
    assert "'read'" in refused[0].json()["error"]["message"] and "'write'" in refused[0].json()["error"]["message"]
    assert "'admin'" in refused[2].json()["error"]["message"]

    # Nothing was changed by the refused calls.
    again = await api.get(f"/v1/customers/{customer}", headers={"X-API-Key": READER})
    assert again.json()["locale"] is None

    # An admin key (old list form included) may export and erase.
    exported = await api.get(f"/v1/customers/{customer}/export", headers={"X-API-Key": OLD})
    assert exported.status_code == 200, exported.text


async def test_unknown_and_missing_keys_are_401(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/journeys")).status_code == 401
    assert (await api.get("/v1/journeys", headers={"X-API-Key": "nope"})).status_code == 401
    assert (await api.get("/v1/journeys", headers={"X-API-Key": READER})).status_code == 200


async def test_provider_webhooks_take_a_write_key_as_basic_password(api: httpx.AsyncClient) -> None:
    body = {"type": "soft_bounce", "channel": "email", "address": "someone@example.com"}
    read = await api.post("/v1/providers/generic/events", json=body, auth=("parcours", READER))
    write = await api.post("/v1/providers/generic/events", json=body, auth=("parcours", WRITER))
    assert read.status_code == 403
    assert write.status_code == 200, write.text


def api_routes(
    routes: Iterable[BaseRoute], prefix: str = "", deps: tuple[Any, ...] = ()
) -> Iterator[tuple[str, APIRoute, tuple[Any, ...]]]:
    """Every API route of an app, with its full path and the dependencies of the routers it was included by.

    FastAPI keeps an included router as one wrapper in ``app.routes``, so the routes must be looked for inside it.
    """
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route, deps
        elif isinstance(route, _IncludedRouter):
            context = route.include_context
            yield from api_routes(
                route.original_router.routes, prefix + context.prefix, deps + tuple(context.dependencies)
            )


def test_every_route_declares_its_role(time_skipping_env: WorkflowEnvironment) -> None:
    app = create_app(role_settings(), pool=None, client=time_skipping_env.client)  # type: ignore[arg-type]
    undeclared, checked = [], set()
    for path, route, deps in api_routes(app.routes):
        if path in PUBLIC | SIGNED | SIGN_IN | IN_HANDLER:
            continue
        calls = [d.call for d in route.dependant.dependencies] + [d.dependency for d in deps]
        roles = {getattr(call, "required_role", None) for call in calls} - {None}
        checked.add(path)
        if len(roles) != 1:
            undeclared.append(f"{sorted(route.methods)} {path}: {roles}")
    # The walk must really reach the routes: the journeys, events and console routes are among them.
    assert {"/v1/journeys", "/v1/events", "/console/journeys"} <= checked, sorted(checked)
    assert undeclared == []
