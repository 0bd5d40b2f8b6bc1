"""The device registry: register, read, list, delete; validation names the field; merges move devices and their
push deliveries, the export lists them, erasure deletes them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from store import customers as customer_store
from store import deliveries as delivery_store
from store import identity, privacy
from tests.support.providers import WebPushFake, running
from tests.support.stack import API_KEY, make_settings


@pytest_asyncio.fixture
async def http(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(), pool=pool, client=time_skipping_env.client)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://parcours.test", headers={"X-API-Key": API_KEY}
    ) as client:
        yield client


async def new_customer(pool: asyncpg.Pool) -> str:
    customer_id = f"cust-{uuid.uuid4().hex[:12]}"
    await customer_store.upsert_customer(pool, customer_id, email=f"{customer_id}@example.com")
    return customer_id


async def test_register_replace_list_and_delete_devices(http: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    customer_id = await new_customer(pool)
    base = f"/v1/customers/{customer_id}/devices"
    created = await http.put(
        f"{base}/phone-1", json={"platform": "fcm", "token": "tok-a", "app": "shop", "locale": "fr"}
    )
    assert created.status_code == 201, created.text
    replaced = await http.put(f"{base}/phone-1", json={"platform": "fcm", "token": "tok-b", "app": "shop"})
    assert replaced.status_code == 200 and replaced.json()["token"] == "tok-b"
    async with running(WebPushFake()) as web:
        subscription = web.subscribe().subscription()
    browser = await http.put(f"{base}/browser", json={"platform": "web", "subscription": subscription})
    assert browser.status_code == 201, browser.text
    iphone = await http.put(f"{base}/iphone", json={"platform": "apns", "token": "ab" * 32})
    assert iphone.status_code == 201, iphone.text

    listed = (await http.get(base)).json()
    assert [d["device_id"] for d in listed] == ["phone-1", "browser", "iphone"]
    assert all(d["active"] for d in listed)
    assert (await http.get(f"{base}/browser")).json()["subscription"]["endpoint"] == subscription["endpoint"]
    assert (await http.delete(f"{base}/phone-1")).status_code == 204
    assert (await http.get(f"{base}/phone-1")).status_code == 404
    assert (await http.delete(f"{base}/phone-1")).status_code == 404


async def test_bad_devices_are_422_naming_the_field(http: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    customer_id = await new_customer(pool)
    base = f"/v1/customers/{customer_id}/devices/d1"
    cases = [
        ({"platform": "fax", "token": "x"}, "platform"),
        ({"platform": "fcm"}, "token"),
        ({"platform": "web", "token": "x"}, "subscription"),
        ({"platform": "apns", "token": "not-hex"}, "token"),
        (
            {
                "platform": "web",
                "subscription": {"endpoint": "https://push.example/x", "keys": {"p256dh": "AAAA", "auth": "AAAA"}},
            },
            "subscription.keys.p256dh",
        ),
        ({"platform": "fcm", "token": "x", "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        response = await http.put(base, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["field"] == field, (body, response.json())
    unknown = await http.put(
        f"/v1/customers/nobody-{uuid.uuid4().hex}/devices/d1", json={"platform": "fcm", "token": "x"}
    )
    assert unknown.status_code == 404


async def test_merge_moves_devices_export_lists_them_erasure_deletes_them(
    http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    customer_id = await new_customer(pool)
    anonymous = uuid.uuid4().hex
    anon_profile = identity.anonymous_profile(anonymous)
    await customer_store.upsert_customer(pool, anon_profile)
    assert (
        await http.put(f"/v1/customers/{anon_profile}/devices/tab", json={"platform": "fcm", "token": "t1"})
    ).status_code == 201
    key = f"push:{anon_profile}:1"
    await delivery_store.record(
        pool,
        key,
        anon_profile,
        [delivery_store.Answer("tab", "fcm", "sent", provider_id="projects/p/messages/1")],
        max_attempts=5,
    )
    identified = await http.post("/v1/identify", json={"customer_id": customer_id, "anonymous_ids": [anonymous]})
    assert identified.status_code == 200, identified.text

    assert [d["device_id"] for d in (await http.get(f"/v1/customers/{customer_id}/devices")).json()] == ["tab"]
    assert [d.customer_id for d in await delivery_store.deliveries_of(pool, key)] == [customer_id]
    export = await privacy.export_customer(pool, customer_id)
    assert export is not None and [d["device_id"] for d in export["devices"]] == ["tab"]
    assert [(d["idempotency_key"], d["device_id"], d["status"]) for d in export["push_deliveries"]] == [
        (key, "tab", "sent")
    ]
    await privacy.erase_customer(
        pool, customer_id, b"secret", requested_at=export["profile"]["created_at"], complete=True
    )
    assert await pool.fetchval("SELECT count(*) FROM devices WHERE customer_id = $1", customer_id) == 0
    assert await delivery_store.deliveries_of(pool, key) == []
