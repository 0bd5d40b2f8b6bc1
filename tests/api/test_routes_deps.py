"""API keys have roles: a read key reads, and is refused (403 naming the role) where writing or erasing is needed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest_asyncio
from fastapi.routing import APIRoute
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from config.settings import Settings

READER, WRITER, ADMIN, OLD = "reader-key", "writer-key", "admin-key", "old-form-key"

# Routes without an API key: the token in the path (or nothing) is the credential.
PUBLIC = {"/healthz", "/readyz", "/preferences/{token}", "/v1/unsubscribe/{token}", "/c/{token}", "/o/{token}"}


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


def test_every_route_declares_its_role(time_skipping_env: WorkflowEnvironment) -> None:
    app = create_app(role_settings(), pool=None, client=time_skipping_env.client)  # type: ignore[arg-type]
    undeclared = []
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path in PUBLIC:
            continue
        roles = {getattr(d.call, "required_role", None) for d in route.dependant.dependencies} - {None}
        if len(roles) != 1:
            undeclared.append(f"{sorted(route.methods)} {route.path}: {roles}")
    assert undeclared == []
