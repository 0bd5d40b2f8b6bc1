"""Test sends with the ``devices`` push adapter (FCM, APNs, Web Push), the production set-up.

A push test goes to the device given in the request, through the fake of its platform's provider (they check what
the real ones check: tests/support/providers.py, apns.py), marked ``[TEST]`` and rendered with the customer's
data; the customer's own devices get nothing, and nothing is recorded: no message, no delivery, no device change
(a dead test token deactivates no stored device, even one with that very token), whatever the customer's consent
and frequency cap say. An email test still reaches the address given.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from config.settings import Settings
from journeys import parse_journey
from store import devices as device_store
from store import journeys as journey_store
from tests.activities.channels.test_push import vapid_key
from tests.support.apns import ApnsFake, running_apns
from tests.support.mail import SmtpSink
from tests.support.providers import FcmFake, WebPushFake, running
from tests.support.stack import API_KEY, make_settings

APNS_TOKEN = "ab" * 32


@contextlib.asynccontextmanager
async def api(settings: Settings, pool: asyncpg.Pool, key: str = API_KEY) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, pool=pool, client=None)  # type: ignore[arg-type]  # test sends need no Temporal
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://parcours.test",
        headers={"Authorization": f"Bearer {key}"},
    ) as http:
        yield http


async def push_journey(pool: asyncpg.Pool) -> str:
    journey_id = f"push-test-{uuid.uuid4().hex[:8]}"
    journey = parse_journey(
        {
            "id": journey_id,
            "name": "Push test send",
            "trigger": {"event": "cart_left"},
            "steps": [
                {
                    "id": "nudge",
                    "type": "send",
                    "channels": ["push", "email"],
                    "content": {
                        "push": {
                            "title": "{{ customer.first_name }}, your cart",
                            "body": "{{ event.items }} item(s) wait",
                            "data": {"cart": "{{ event.cart_id }}"},
                        },
                        "email": {"subject": "Your cart, {{ customer.first_name }}", "text": "t"},
                    },
                }
            ],
        }
    )
    await journey_store.publish(pool, journey)
    return journey_id


async def customer(pool: asyncpg.Pool, **devices: str) -> str:
    """Ada, with push consent withdrawn and a daily frequency cap: a real push would never reach her today."""
    customer_id = f"ada-{uuid.uuid4().hex[:10]}"
    await pool.execute(
        "INSERT INTO customers (id, email, attributes) VALUES ($1, $2, $3)",
        customer_id,
        f"{customer_id}@example.com",
        {"first_name": "Ada", "frequency_cap": "daily"},
    )
    await pool.execute(
        "INSERT INTO consent_events (customer_id, scope, name, status, source) VALUES ($1, 'channel', 'push', "
        "'withdrawn', 'test')",
        customer_id,
    )
    for device_id, token in devices.items():
        await device_store.put_device(
            pool, customer_id, device_id, platform="fcm", token=token, subscription=None, app="shop", locale=None
        )
    return customer_id


async def untouched(pool: asyncpg.Pool, customer_id: str) -> list[tuple[str, bool, Any]]:
    """Nothing recorded for the customer; the stored devices as (id, active, updated_at)."""
    for table in ("messages", "message_deliveries"):
        count = await pool.fetchval(f"SELECT count(*) FROM {table} WHERE customer_id = $1", customer_id)
        assert count == 0, table
    return [(d.device_id, d.active, d.updated_at) for d in await device_store.devices_of(pool, customer_id)]


def fcm_settings(tmp_path: Path, fcm: FcmFake, **extra: Any) -> Settings:
    return make_settings(
        channel_push="devices",
        fcm_project_id=fcm.project_id,
        fcm_service_account_file=fcm.service_account_file(tmp_path),
        fcm_base_url=fcm.url,
        **extra,
    )


TEST_BODY = {"step": "nudge", "event": {"properties": {"items": 3, "cart_id": "c-42"}}, "channel": "push"}


@pytest.mark.parametrize("platform", ["fcm", "apns", "web"])
async def test_a_journey_push_test_reaches_the_given_device_only_and_counts_nowhere(
    pool: asyncpg.Pool, tmp_path: Path, platform: str
) -> None:
    journey_id = await push_journey(pool)
    customer_id = await customer(pool, own_phone="customer-own-token")
    before = await untouched(pool, customer_id)
    async with contextlib.AsyncExitStack() as stack:
        fcm = await stack.enter_async_context(running(FcmFake()))
        settings = fcm_settings(tmp_path, fcm)
        if platform == "apns":
            apns, tls = await stack.enter_async_context(running_apns(tmp_path, ApnsFake()))
            device: dict[str, Any] = {"platform": "apns", "token": APNS_TOKEN}
            settings = settings.model_copy(update=apns.settings(tmp_path, tls))
        elif platform == "web":
            web = await stack.enter_async_context(running(WebPushFake()))
            pem, public = vapid_key()
            web.vapid_public_key = public
            subscriber = web.subscribe()
            device = {"platform": "web", "subscription": subscriber.subscription()}
            settings = settings.model_copy(
                update={"vapid_private_key": Settings(vapid_private_key=pem).vapid_private_key}
            )
        else:
            device = {"platform": "fcm", "token": "qa-phone-token"}
        http = await stack.enter_async_context(api(settings, pool))
        url = f"/v1/journeys/{journey_id}/test-send"
        answers = [
            await http.post(url, json={**TEST_BODY, "customer_id": customer_id, "device": device}) for _ in range(2)
        ]

        for answer in answers:  # twice: neither consent, nor the daily cap, nor the first test holds it back
            assert answer.status_code == 200, answer.text
            result = answer.json()
            assert (result["status"], result["platform"], result["error"]) == ("sent", platform, None)
            assert result["provider_message_id"]
        if platform == "fcm":
            assert [m["token"] for m in fcm.sent] == ["qa-phone-token"] * 2
            assert fcm.sent[0]["notification"] == {"title": "[TEST] Ada, your cart", "body": "3 item(s) wait"}
            assert fcm.sent[0]["data"]["cart"] == "c-42"
            assert result["provider_message_id"].startswith(f"projects/{fcm.project_id}/messages/")
            assert result["to"] == "qa-phone-token"
        elif platform == "apns":
            assert [p.device_token for p in apns.received] == [APNS_TOKEN] * 2
            alert = apns.received[0].payload["aps"]["alert"]
            assert alert == {"title": "[TEST] Ada, your cart", "body": "3 item(s) wait"}
            assert apns.received[0].payload["cart"] == "c-42"
            assert result["provider_message_id"] == apns.received[1].headers["apns-id"]
        else:
            assert [sub for sub, _, _ in web.received] == [subscriber.id] * 2
            _, payload, _ = web.received[0]
            assert (payload["title"], payload["body"], payload["data"]) == (
                "[TEST] Ada, your cart",
                "3 item(s) wait",
                {"cart": "c-42"},
            )
            assert result["to"] == subscriber.endpoint
        if platform != "fcm":
            assert fcm.sent == []  # the customer's own FCM phone got nothing
    assert await untouched(pool, customer_id) == before


async def test_a_broadcast_push_test_goes_to_the_given_device(pool: asyncpg.Pool, tmp_path: Path) -> None:
    customer_id = await customer(pool, own_phone="customer-own-token")
    broadcast = {  # email first: the device alone says the test is the push
        "segment": {"where": [{"field": "profile.tag", "op": "eq", "value": "nobody"}]},
        "channels": ["email", "push"],
        "content": {
            "email": {"subject": "Sale", "text": "20% off"},
            "push": {"title": "Sale for {{ customer.first_name }}", "body": "20% off"},
        },
    }
    async with running(FcmFake()) as fcm, api(fcm_settings(tmp_path, fcm), pool) as http:
        answer = await http.post(
            "/v1/broadcasts/test-send",
            json={"broadcast": broadcast, "customer_id": customer_id, "device": {"platform": "fcm", "token": "qa"}},
        )
        assert answer.status_code == 200, answer.text
        assert (answer.json()["channel"], answer.json()["status"]) == ("push", "sent")
        assert [(m["token"], m["notification"]["title"]) for m in fcm.sent] == [("qa", "[TEST] Sale for Ada")]
    assert [(d, active) for d, active, _ in await untouched(pool, customer_id)] == [("own_phone", True)]


async def test_a_dead_test_token_is_reported_and_changes_no_stored_device(pool: asyncpg.Pool, tmp_path: Path) -> None:
    # The customer's own phone has the very token the provider now says is dead: a real push would deactivate it.
    journey_id = await push_journey(pool)
    customer_id = await customer(pool, own_phone="tok-dead")
    before = await untouched(pool, customer_id)
    async with running(FcmFake()) as fcm, api(fcm_settings(tmp_path, fcm), pool) as http:
        fcm.dead_tokens.add("tok-dead")
        answer = await http.post(
            f"/v1/journeys/{journey_id}/test-send",
            json={**TEST_BODY, "customer_id": customer_id, "device": {"platform": "fcm", "token": "tok-dead"}},
        )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["status"], result["provider_message_id"]) == ("failed", None)
    assert result["error"].startswith("UNREGISTERED (FCM answered 404 NOT_FOUND)")
    assert result["provider_answer"]["codes"] == ["UNREGISTERED"]
    assert await untouched(pool, customer_id) == before  # still active, never touched
    assert before[0][:2] == ("own_phone", True)


async def test_a_missing_or_wrong_device_and_an_unconfigured_platform_are_422s_naming_the_field(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    journey_id = await push_journey(pool)
    customer_id = await customer(pool, own_phone="customer-own-token")
    body = {**TEST_BODY, "customer_id": customer_id}
    web_key = vapid_key()[0]
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({}, "device", '"device"'),
        ({"to": "qa-phone-token"}, "device", "a push test goes to a device"),
        ({"device": "qa-phone-token"}, "device", "valid dictionary"),
        ({"device": {"platform": "sms", "token": "t"}}, "device.platform", "'fcm', 'apns' or 'web'"),
        ({"device": {"platform": "fcm"}}, "device.token", "required for platform 'fcm'"),
        ({"device": {"platform": "fcm", "token": ""}}, "device.token", "at least 1 character"),
        ({"device": {"platform": "apns", "token": "not-hex"}}, "device.token", "hexadecimal"),
        ({"device": {"platform": "web", "token": "t"}}, "device.subscription", "required for platform 'web'"),
        ({"device": {"platform": "web", "endpoint": "https://push.example/x"}}, "device.endpoint", "not permitted"),
        (
            {"device": {"platform": "web", "subscription": {"endpoint": "x", "keys": {"p256dh": "a", "auth": "b"}}}},
            "device.subscription.endpoint",
            "absolute https URL",
        ),
        ({"device": {"platform": "fcm", "token": "t"}, "to": "qa@example.org"}, "device", "either 'to' or 'device'"),
        ({"device": {"platform": "fcm", "token": "t"}, "channel": "email"}, "device", "for push test sends"),
        # FCM and Web Push are configured here, APNs is not: the settings it lacks are named.
        (
            {"device": {"platform": "apns", "token": APNS_TOKEN}},
            "device.platform",
            "APNs push is not configured here: set PARCOURS_APNS_KEY_FILE and PARCOURS_APNS_KEY_ID and "
            "PARCOURS_APNS_TEAM_ID and PARCOURS_APNS_TOPIC",
        ),
    ]
    async with running(FcmFake()) as fcm, api(fcm_settings(tmp_path, fcm, vapid_private_key=web_key), pool) as http:
        for extra, field, message in cases:
            answer = await http.post(f"/v1/journeys/{journey_id}/test-send", json={**body, **extra})
            assert answer.status_code == 422, (extra, answer.text)
            error = answer.json()["error"]
            assert error["field"] == field and message in error["message"], (extra, error)
            if "channel" in extra:
                continue  # the broadcast below has push only
            broadcast = await http.post(
                "/v1/broadcasts/test-send",
                json={
                    "broadcast": {"segment": {}, "channel": "push", "template": {"title": "t", "body": "b"}},
                    "customer_id": customer_id,
                    **extra,
                },
            )
            assert broadcast.status_code == 422 and broadcast.json()["error"]["field"] == field, broadcast.text
        # A service account file that is gone: a 422 naming the platform, not a 500.
        settings = fcm_settings(tmp_path, fcm).model_copy(
            update={"fcm_service_account_file": tmp_path / "missing.json"}
        )
        async with api(settings, pool) as broken:
            answer = await broken.post(
                f"/v1/journeys/{journey_id}/test-send",
                json={**body, "device": {"platform": "fcm", "token": "t"}},
            )
        assert answer.status_code == 422 and answer.json()["error"]["field"] == "device.platform", answer.text
        assert "missing.json" in answer.json()["error"]["message"]
        assert fcm.sent == []
    # A Web Push endpoint is checked as a webhook URL is: this process's own network is refused unless allowed.
    async with running(WebPushFake()) as web:
        subscriber = web.subscribe()
        settings = make_settings(vapid_private_key=web_key, webhook_allow_hosts=[])
        async with api(settings, pool) as guarded:
            answer = await guarded.post(
                f"/v1/journeys/{journey_id}/test-send",
                json={**body, "device": {"platform": "web", "subscription": subscriber.subscription()}},
            )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["field"] == "device.subscription.endpoint"
        assert "PARCOURS_WEBHOOK_ALLOW_HOSTS" in answer.json()["error"]["message"]
        assert web.received == []
    assert [(d, active) for d, active, _ in await untouched(pool, customer_id)] == [("own_phone", True)]


async def test_an_email_test_still_goes_to_the_address_with_the_devices_push_adapter(
    pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    journey_id = await push_journey(pool)
    customer_id = await customer(pool, own_phone="customer-own-token")
    settings = make_settings(
        channel_push="devices",
        vapid_private_key=vapid_key()[0],  # Web Push keys: no request leaves the machine in this test
        smtp_host=smtp_sink.host,
        smtp_port=smtp_sink.port,
    )
    async with api(settings, pool) as http:
        url = f"/v1/journeys/{journey_id}/test-send"
        body = {"step": "nudge", "customer_id": customer_id, "to": "qa@example.org"}
        refused = await http.post(url, json=body)  # push is the step's first channel: it needs a device
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "device", refused.text
        sent = await http.post(url, json={**body, "channel": "email"})
        assert sent.status_code == 200, sent.text
        assert sent.json()["status"] == "sent"
        [mail] = await smtp_sink.wait_for(1, timeout=10)
        assert mail.rcpt_tos == ["qa@example.org"] and mail.message["Subject"] == "[TEST] Your cart, Ada"
    assert [(d, active) for d, active, _ in await untouched(pool, customer_id)] == [("own_phone", True)]


async def test_each_key_has_its_hourly_test_sends_then_a_429_with_retry_after(
    pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    """A test send skips consent and caps and goes where the caller says: a key cannot make it a relay."""
    journey_id = await push_journey(pool)
    customer_id = await customer(pool)
    tag = uuid.uuid4().hex[:8]
    mine, theirs = f"key-{uuid.uuid4().hex}", f"key-{uuid.uuid4().hex}"
    settings = make_settings(
        api_keys=[mine, theirs], test_sends_per_hour=2, smtp_host=smtp_sink.host, smtp_port=smtp_sink.port
    )
    url = f"/v1/journeys/{journey_id}/test-send"
    body = {"step": "nudge", "customer_id": customer_id, "channel": "email"}
    async with api(settings, pool, mine) as http:
        answers = [await http.post(url, json={**body, "to": f"qa{i}-{tag}@example.org"}) for i in range(3)]
    async with api(settings, pool, theirs) as http:
        other = await http.post(url, json={**body, "to": f"qa-other-{tag}@example.org"})

    assert [a.status_code for a in answers] == [200, 200, 429], answers[-1].text
    assert [a.json()["test_sends_left"] for a in answers[:2]] == [1, 0]
    refused = answers[2]
    assert refused.json()["error"]["field"] == "to" and "test_sends_per_hour" in refused.json()["error"]["message"]
    assert 3000 < int(refused.headers["retry-after"]) <= 3600
    assert other.status_code == 200 and other.json()["test_sends_left"] == 1  # another key has its own
    mails = await smtp_sink.wait_for(3, timeout=10)
    sent = [f"qa-other-{tag}@example.org", f"qa0-{tag}@example.org", f"qa1-{tag}@example.org"]
    assert sorted(r for m in mails for r in m.rcpt_tos if tag in r) == sent
    logged = await pool.fetch(
        "SELECT channel, recipient FROM test_sends WHERE recipient = ANY($1::text[])",
        [*sent, f"qa2-{tag}@example.org"],
    )
    assert sorted(r["recipient"] for r in logged) == sent  # the refused one is not logged
    assert {r["channel"] for r in logged} == {"email"}
