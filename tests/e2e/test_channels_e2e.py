"""SMS and push end to end: journeys on the time-skipping server, the real adapters, the provider fakes.

- The abandoned-cart example over its three channels: the email at the SMTP sink, the push at FCM and at a
  browser (decrypted by the Web Push fake), the SMS at Twilio, whose signed status callbacks stamp the message
  delivered.
- A customer who texts STOP gets no more SMS from the next step on; START brings them back.
- Dead devices (an FCM UNREGISTERED, a Web Push 410) are deactivated and the next push goes to the one left.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from journeys.sms import measure
from store import devices as device_store
from tests.activities.channels.test_push import vapid_key
from tests.support.engine import Engine, example, journey_from, make_customer, running_engine
from tests.support.mail import SmtpSink
from tests.support.providers import FcmFake, TwilioFake, WebPushFake, running
from tests.support.stack import eventually, make_settings

BASE = "http://parcours.test"
INBOUND = f"{BASE}/v1/providers/twilio/inbound"


@dataclass
class Providers:
    engine: Engine
    twilio: TwilioFake
    fcm: FcmFake
    web: WebPushFake


@contextlib.asynccontextmanager
async def providers(
    env: WorkflowEnvironment, pool: asyncpg.Pool, smtp: SmtpSink, tmp_path: Path
) -> AsyncIterator[Providers]:
    """A worker whose SMS go to the Twilio fake and whose pushes go to the FCM and Web Push fakes; the fake
    Twilio's callbacks reach the API."""
    async with running(TwilioFake()) as twilio, running(FcmFake()) as fcm, running(WebPushFake()) as web:
        pem, public = vapid_key()
        web.vapid_public_key = public
        overrides: dict[str, Any] = {
            "channel_sms": "twilio",
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token": twilio.auth_token,
            "twilio_from": "+15005550006",
            "twilio_base_url": twilio.url,
            "public_base_url": BASE,
            "channel_push": "devices",
            "fcm_project_id": fcm.project_id,
            "fcm_service_account_file": fcm.service_account_file(tmp_path),
            "fcm_base_url": fcm.url,
            "vapid_private_key": pem,
        }
        app = create_app(make_settings(**overrides), pool=pool, client=env.client)
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http,
            running_engine(env, pool, smtp, **overrides) as engine,
        ):
            twilio.callback_client = http
            yield Providers(engine, twilio, fcm, web)
            await twilio.settle()


async def add_device(pool: asyncpg.Pool, customer_id: str, device_id: str, **fields: Any) -> None:
    values: dict[str, Any] = {"token": None, "subscription": None, "app": "shop", "locale": None, **fields}
    await device_store.put_device(pool, customer_id, device_id, **values)


async def test_abandoned_cart_reaches_the_customer_by_email_push_and_sms(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    async with providers(time_skipping_env, pool, smtp_sink, tmp_path) as p:
        customer = await make_customer(pool, phone=True, consent=("email", "push", "sms"))
        phone = f"+336{uuid.uuid4().int % 10**8:08d}"
        await pool.execute("UPDATE customers SET phone = $2 WHERE id = $1", customer, phone)
        browser = p.web.subscribe()
        await add_device(pool, customer, "android", platform="fcm", token=f"fcm-{customer}")
        await add_device(pool, customer, "laptop", platform="web", subscription=browser.subscription())

        handle = await p.engine.enter(
            example("abandoned-cart"),
            customer,
            {"cart_value": 89.9, "item_count": 2, "cart_url": "https://s.example/c"},
        )
        await time_skipping_env.sleep(timedelta(days=3))
        result = await handle.result()
        await p.twilio.settle()

        assert result.status == "completed"
        rows = await p.engine.messages(customer)
        assert [(r["step_id"], r["channel"], r["status"]) for r in rows] == [
            ("cart-email", "email", "sent"),
            ("cart-push", "push", "sent"),
            ("sms-offer", "sms", "sent"),
        ]
        assert [m["Subject"] for m in p.engine.mail_to(customer)] == ["You left 2 item(s) in your cart"]
        assert [m["notification"]["title"] for m in p.fcm.sent if m["token"] == f"fcm-{customer}"] == [
            "Still thinking it over?"
        ]
        assert [payload["title"] for sub, payload, _ in p.web.received if sub == browser.id] == [
            "Still thinking it over?"
        ]
        [sms] = [m for m in p.twilio.messages if m.to == phone]
        assert sms.body.startswith("Parcours Shop: 10% off") and "Reply STOP" in sms.body

        sms_row = rows[2]
        assert sms_row["provider_message_id"] == sms.sid
        # The cart link became a tracked link, longer than 160 characters in all: what Twilio bills is recorded.
        length = measure(sms.body)
        assert length.segments > 1
        assert (sms_row["encoding"], sms_row["segments"]) == ("GSM-7", length.segments)
        assert float(sms_row["cost"]) == round(0.04 * length.segments, 6)
        assert sms_row["recipient"] == phone
        delivered = await pool.fetchrow(
            "SELECT provider_status, delivered_at FROM messages WHERE id = $1", sms_row["id"]
        )
        assert delivered["provider_status"] == "delivered" and delivered["delivered_at"] is not None
        assert rows[1]["recipient"] == "devices:android,laptop"


async def test_stop_by_sms_skips_the_next_sms_and_start_brings_them_back(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    steps: list[dict[str, Any]] = []
    for n in (1, 2, 3):
        steps.append({"id": f"sms-{n}", "type": "send", "channel": "sms", "template": {"text": f"News #{n}"}})
        steps.append({"id": f"pause-{n}", "type": "wait", "duration": "1h"})
    journey = journey_from({"id": "sms-news", "name": "SMS news", "trigger": {"event": "go"}, "steps": steps})
    async with providers(time_skipping_env, pool, smtp_sink, tmp_path) as p:
        customer = await make_customer(pool, phone=True, consent=("sms",))
        phone = f"+336{uuid.uuid4().int % 10**8:08d}"
        await pool.execute("UPDATE customers SET phone = $2 WHERE id = $1", customer, phone)
        handle = await p.engine.enter(journey, customer)

        async def decided(count: int) -> list[asyncpg.Record]:
            rows = await p.engine.messages(customer)
            assert len(rows) >= count
            return rows

        with time_skipping_env.auto_time_skipping_disabled():
            await eventually(lambda: decided(1))
        assert (await p.twilio.inbound(INBOUND, phone, "STOP")).status_code == 200
        await time_skipping_env.sleep(timedelta(minutes=61))
        with time_skipping_env.auto_time_skipping_disabled():
            await eventually(lambda: decided(2))
        assert (await p.twilio.inbound(INBOUND, phone, "START")).status_code == 200
        await time_skipping_env.sleep(timedelta(minutes=61))
        await handle.result()

        rows = await p.engine.messages(customer)
        assert [(r["step_id"], r["status"], r["reason"]) for r in rows] == [
            ("sms-1", "sent", None),
            ("sms-2", "skipped", "consent_withdrawn:sms"),
            ("sms-3", "sent", None),
        ]
        assert [m.body for m in p.twilio.messages if m.to == phone] == ["News #1", "News #3"]


async def test_dead_devices_are_deactivated_and_the_next_push_goes_to_the_one_left(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    steps = [
        {"id": "push-1", "type": "send", "channel": "push", "template": {"title": "One", "body": "first"}},
        {"id": "pause", "type": "wait", "duration": "1h"},
        {"id": "push-2", "type": "send", "channel": "push", "template": {"title": "Two", "body": "second"}},
    ]
    journey = journey_from({"id": "pushes", "name": "Pushes", "trigger": {"event": "go"}, "steps": steps})
    async with providers(time_skipping_env, pool, smtp_sink, tmp_path) as p:
        customer = await make_customer(pool, consent=("push",))
        dead_token = f"fcm-dead-{customer}"
        p.fcm.dead_tokens.add(dead_token)
        gone, alive = p.web.subscribe(), p.web.subscribe()
        p.web.gone.add(gone.id)
        await add_device(pool, customer, "old-android", platform="fcm", token=dead_token)
        await add_device(pool, customer, "old-browser", platform="web", subscription=gone.subscription())
        await add_device(pool, customer, "browser", platform="web", subscription=alive.subscription())

        await (await p.engine.enter(journey, customer)).result()

        rows = await p.engine.messages(customer)
        assert [(r["step_id"], r["status"], r["recipient"]) for r in rows] == [
            ("push-1", "sent", "devices:old-android,old-browser,browser"),
            ("push-2", "sent", "devices:browser"),
        ]
        assert [payload["title"] for sub, payload, _ in p.web.received if sub == alive.id] == ["One", "Two"]
        devices = {d.device_id: d.active for d in await device_store.devices_of(pool, customer)}
        assert devices == {"old-android": False, "old-browser": False, "browser": True}


async def test_a_customer_whose_only_device_is_dead_gets_the_next_channel(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    step = {
        "id": "nudge",
        "type": "send",
        "channels": ["push", "email"],
        "content": {"push": {"title": "Hi", "body": "push"}, "email": {"subject": "Hi by email", "text": "email"}},
    }
    journey = journey_from({"id": "fallback", "name": "Fallback", "trigger": {"event": "go"}, "steps": [step]})
    async with providers(time_skipping_env, pool, smtp_sink, tmp_path) as p:
        customer = await make_customer(pool, consent=("push", "email"))
        p.fcm.dead_tokens.add(f"dead-{customer}")
        await add_device(pool, customer, "old", platform="fcm", token=f"dead-{customer}")
        await (await p.engine.enter(journey, customer)).result()

        [row] = await p.engine.messages(customer)
        assert (row["channel"], row["status"]) == ("email", "sent")
        assert [m["Subject"] for m in p.engine.mail_to(customer)] == ["Hi by email"]
        assert not (await device_store.get_device(pool, customer, "old")).active  # type: ignore[union-attr]
