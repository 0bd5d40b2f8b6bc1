"""APNs end to end: a journey on the time-skipping server pushes to iPhones through the real adapter, over HTTP/2 and
verified TLS to the fake APNs (tests/support/apns.py). An uninstalled app's token (410 Unregistered) deactivates
its device and the next step's push goes to the iPhone left; the provider token is signed once for the journey. A
device that fails transiently while another takes the push gets it on the send's retry, and only it.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from temporalio.testing import WorkflowEnvironment

from store import devices as device_store
from tests.support.apns import running_apns
from tests.support.engine import journey_from, make_customer, running_engine
from tests.support.mail import SmtpSink
from tests.support.providers import FcmFake, running


async def test_a_journey_pushes_to_iphones_and_an_unregistered_one_is_dropped(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    steps = [
        {
            "id": "push-1",
            "type": "send",
            "channel": "push",
            "template": {
                "title": "Hi {{ customer.first_name | default: 'there' }}",
                "body": "{{ event.item }} is back",
            },
        },
        {"id": "pause", "type": "wait", "duration": "1h"},
        {"id": "push-2", "type": "send", "channel": "push", "template": {"title": "Last call", "body": "Today only"}},
    ]
    journey = journey_from({"id": "ios-pushes", "name": "iOS pushes", "trigger": {"event": "go"}, "steps": steps})
    async with running_apns(tmp_path) as (apns, tls):
        overrides = {
            "channel_push": "devices",
            **apns.settings(tmp_path, tls),
        }
        async with running_engine(time_skipping_env, pool, smtp_sink, **overrides) as engine:
            customer = await make_customer(pool, consent=("push",))
            live, dead = "ab" * 32, "0f" * 32
            apns.dead_tokens.add(dead)
            for device_id, token in (("old-iphone", dead), ("iphone", live)):
                await device_store.put_device(
                    pool, customer, device_id, platform="apns", token=token, subscription=None, app="shop", locale=None
                )
            handle = await engine.enter(journey, customer, {"item": "The red scarf"})
            await handle.result()
            rows = await engine.messages(customer)

    assert [(r["step_id"], r["status"], r["recipient"]) for r in rows] == [
        ("push-1", "sent", "devices:old-iphone,iphone"),
        ("push-2", "sent", "devices:iphone"),
    ]
    assert [(p.device_token, p.payload["aps"]["alert"]) for p in apns.received] == [
        (live, {"title": "Hi Ada", "body": "The red scarf is back"}),
        (live, {"title": "Last call", "body": "Today only"}),
    ]
    assert apns.refused == [(410, "Unregistered")] and len(apns.provider_tokens) == 1
    devices = {d.device_id: d.active for d in await device_store.devices_of(pool, customer)}
    assert devices == {"old-iphone": False, "iphone": True}


async def test_a_push_one_iphone_could_not_take_is_retried_for_that_iphone_only(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """An Android phone takes the push at once; APNs answers 503 for the iPad, then 200. Temporal retries the send,
    the retry pushes to the iPad only: each device gets exactly one, and the message is sent once."""
    step = {"id": "nudge", "type": "send", "channel": "push", "template": {"title": "Cart", "body": "It waits"}}
    journey = journey_from({"id": "two-devices", "name": "Two devices", "trigger": {"event": "go"}, "steps": [step]})
    async with running_apns(tmp_path) as (apns, tls), running(FcmFake()) as fcm:
        overrides = {
            "channel_push": "devices",
            **apns.settings(tmp_path, tls),
            "fcm_project_id": fcm.project_id,
            "fcm_service_account_file": fcm.service_account_file(tmp_path),
            "fcm_base_url": fcm.url,
        }
        async with running_engine(time_skipping_env, pool, smtp_sink, **overrides) as engine:
            customer = await make_customer(pool, consent=("push",))
            ipad = "ab" * 32
            apns.unavailable[ipad] = 1
            await device_store.put_device(
                pool,
                customer,
                "android",
                platform="fcm",
                token=f"fcm-{customer}",
                subscription=None,
                app=None,
                locale=None,
            )
            await device_store.put_device(
                pool, customer, "ipad", platform="apns", token=ipad, subscription=None, app=None, locale=None
            )
            await (await engine.enter(journey, customer)).result()
            rows = await engine.messages(customer)

    [row] = rows
    assert (row["status"], row["recipient"]) == ("sent", "devices:android,ipad")
    assert [m["token"] for m in fcm.sent] == [f"fcm-{customer}"]
    assert [p.device_token for p in apns.received] == [ipad]
    assert apns.refused == [(503, "ServiceUnavailable")]
    deliveries = await pool.fetch(
        "SELECT device_id, status, attempts FROM message_deliveries WHERE customer_id = $1 ORDER BY device_id",
        customer,
    )
    assert [tuple(d) for d in deliveries] == [("android", "sent", 1), ("ipad", "sent", 2)]
    attempts = await pool.fetchval("SELECT attempts FROM messages WHERE customer_id = $1", customer)
    assert attempts == 2  # recorded by Temporal's second attempt of the send
