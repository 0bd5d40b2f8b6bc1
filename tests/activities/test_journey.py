"""The send activity renders HTML parts with customer and event data escaped, text parts as written; a batch of
sends (a broadcast's) decides each recipient as a single send would, and a failure costs only that send."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from activities.broadcasts import send_request
from activities.channels.base import DeliveryResult, OutboundMessage, TransientDeliveryError
from activities.channels.push import DevicesPushChannel
from activities.journey import JourneyActivities
from activities.models import SendRequest, SendResult
from contracts.journey import Event, JourneyResult
from journeys.broadcasts import Broadcast
from store import devices as device_store
from store import suppressions
from tests.activities.channels.test_push import push_settings
from tests.support.channels import make_settings
from tests.support.engine import Engine, journey_from, make_customer, set_consent
from tests.support.providers import FcmFake, running

SCRIPT = "<script>alert('x')</script>"


async def test_markup_in_customer_and_event_data_is_escaped_in_html_and_verbatim_in_text(engine: Engine) -> None:
    journey = journey_from(
        {
            "id": "escape",
            "name": "Escape",
            "trigger": {"event": "escape_start"},
            "steps": [
                {
                    "id": "hello",
                    "type": "send",
                    "channel": "email",
                    "kind": "transactional",
                    "track": False,
                    "template": {
                        "subject": "Hi {{ customer.first_name }}",
                        "text": "Hi {{ customer.first_name }}, {{ event.note }}",
                        "html": "<p>Hi {{ customer.first_name }}, {{ event.note }}</p>{{ event.banner | trusted }}",
                    },
                }
            ],
        }
    )
    customer = await make_customer(engine.pool, attributes={"first_name": SCRIPT})
    await engine.pool.execute(  # make_customer names everyone Ada
        "UPDATE customers SET attributes = attributes || $2 WHERE id = $1", customer, {"first_name": SCRIPT}
    )
    handle = await engine.enter(journey, customer, {"note": '<img src=x onerror="steal()">', "banner": "<b>sale</b>"})
    result: JourneyResult = await asyncio.wait_for(handle.result(), 30)
    assert result.status == "completed"

    [mail] = engine.mail_to(customer)
    html = mail.get_body(("html",)).get_content()
    text = mail.get_body(("plain",)).get_content()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert (
        "&lt;img src=x onerror=&#34;steal()&#34;&gt;" in html or "&lt;img src=x onerror=&quot;steal()&quot;&gt;" in html
    )
    assert "<b>sale</b>" in html  # marked trusted by the author
    assert f'Hi {SCRIPT}, <img src=x onerror="steal()">' in text
    assert mail["Subject"] == f"Hi {SCRIPT}"


class FlakyEmail:
    """An email channel that keeps what it delivers and fails, transiently, for the addresses in ``failing``."""

    name = "email"

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.failing: set[str] = set()

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        assert message.recipient is not None
        if message.recipient in self.failing:
            raise TransientDeliveryError("451 try again later")
        await asyncio.sleep(0)
        self.delivered.append(message.recipient)
        return DeliveryResult(provider_message_id=f"<{message.idempotency_key}>")

    async def close(self) -> None:
        pass


NOON = datetime(2026, 6, 1, 12, tzinfo=UTC)


def batch_of(customers: list[str], **fields: Any) -> list[SendRequest]:
    b = Broadcast.model_validate(
        {
            "id": f"b-{uuid.uuid4().hex[:10]}",
            "segment": {"where": [{"field": "profile.tag", "op": "eq", "value": "x"}]},
            "channel": "email",
            "template": {"subject": "Hi {{ customer.first_name }}", "text": "Sale"},
            **fields,
        }
    )
    return [send_request(b, c, NOON) for c in customers]


async def test_a_batch_applies_the_send_policy_to_each_recipient_and_records_one_row_each(pool: asyncpg.Pool) -> None:
    email = FlakyEmail()
    settings = make_settings(consent_default="opt_in", frequency_caps=[{"limit": 1, "per": "1d"}])
    sender = JourneyActivities(pool, {"email": email}, settings)
    ok, withdrawn, suppressed, capped = [await make_customer(pool) for _ in range(4)]
    no_address = await make_customer(pool, email=False)
    await set_consent(pool, withdrawn, "channel", "email", "withdrawn")
    await suppressions.add_suppression(pool, "email", f"{suppressed.upper()}@example.com", "manual", source="test")
    [earlier] = await sender.send_batch(batch_of([capped]))
    assert isinstance(earlier, SendResult) and earlier.status == "sent"

    requests = batch_of([ok, withdrawn, suppressed, no_address, capped])
    answers = await sender.send_batch(requests)

    got = {
        r.customer_id: (a.status, a.reason) for r, a in zip(requests, answers, strict=True) if isinstance(a, SendResult)
    }
    assert got == {
        ok: ("sent", None),
        withdrawn: ("skipped", "consent_withdrawn:email"),
        suppressed: ("skipped", "suppressed:manual"),
        no_address: ("skipped", "unreachable:email"),
        capped: ("skipped", "frequency_cap: global cap: 1 per 1d"),
    }
    assert email.delivered == [f"{capped}@example.com", f"{ok}@example.com"]
    rows = await pool.fetch(
        "SELECT customer_id, status FROM messages WHERE idempotency_key = ANY($1)",
        [r.idempotency_key for r in requests],
    )
    assert sorted((r["customer_id"], r["status"]) for r in rows) == sorted((c, s) for c, (s, _) in got.items())

    again = await sender.send_batch(requests)
    assert all(isinstance(a, SendResult) and a.duplicate for a in again)
    assert len(email.delivered) == 2


async def test_a_transient_failure_leaves_only_that_send_to_retry_and_nobody_gets_two(pool: asyncpg.Pool) -> None:
    email = FlakyEmail()
    sender = JourneyActivities(pool, {"email": email}, make_settings(consent_default="opt_in"))
    customers = [await make_customer(pool) for _ in range(6)]
    email.failing = {f"{customers[2]}@example.com"}
    requests = batch_of(customers)

    answers = await sender.send_batch(requests, concurrency=3)
    assert isinstance(answers[2], TransientDeliveryError)
    assert [a.status for a in answers if isinstance(a, SendResult)] == ["sent"] * 5

    email.failing = set()
    retried = await sender.send_batch(requests)
    assert [isinstance(a, SendResult) and a.duplicate for a in retried] == [True, True, False, True, True, True]
    assert sorted(email.delivered) == sorted(f"{c}@example.com" for c in customers)


async def test_a_stopped_batch_begins_no_further_send(pool: asyncpg.Pool) -> None:
    email = FlakyEmail()
    sender = JourneyActivities(pool, {"email": email}, make_settings(consent_default="opt_in"))
    customers = [await make_customer(pool) for _ in range(5)]
    answers = await sender.send_batch(batch_of(customers), concurrency=1, stopped=lambda: len(email.delivered) >= 2)
    assert [a.status if isinstance(a, SendResult) else a for a in answers] == ["sent", "sent", None, None, None]
    count = await pool.fetchval("SELECT count(*) FROM messages WHERE customer_id = ANY($1)", customers)
    assert count == 2


# --- a push that reached some devices only --------------------------------------------------------------------------


def push_request(customer_id: str) -> SendRequest:
    return SendRequest(
        idempotency_key=f"push:{customer_id}:{uuid.uuid4().hex[:8]}",
        journey_id="cart",
        journey_name="Cart",
        journey_version=1,
        step_id="nudge",
        customer_id=customer_id,
        entry_id="e1",
        channel="push",
        template={},
        trigger=Event(event_id="ev", customer_id=customer_id, name="go", occurred_at=NOON),
        candidates=["push", "email"],
        content={"push": {"title": "Your cart", "body": "It waits."}, "email": {"subject": "Cart", "text": "x"}},
        now=NOON,
    )


async def push_customer(pool: asyncpg.Pool) -> str:
    customer_id = await make_customer(pool, consent=("push", "email"))
    for device_id in ("phone", "tablet"):
        await device_store.put_device(
            pool,
            customer_id,
            device_id,
            platform="fcm",
            token=f"{device_id}-{customer_id}",
            subscription=None,
            app=None,
            locale=None,
        )
    return customer_id


async def test_a_retried_push_goes_only_to_the_device_that_failed_and_never_to_the_next_channel(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    email = FlakyEmail()
    async with running(FcmFake()) as fcm:
        push = DevicesPushChannel(push_settings(tmp_path, fcm), pool)
        sender = JourneyActivities(pool, {"push": push, "email": email}, make_settings(consent_default="opt_in"))
        customer_id = await push_customer(pool)
        fcm.unavailable[f"tablet-{customer_id}"] = 1
        request = push_request(customer_id)
        try:
            with pytest.raises(TransientDeliveryError):
                await ActivityEnvironment().run(sender.send_once, request)  # the phone has it; the tablet answered 503
            assert (
                await pool.fetchval("SELECT count(*) FROM messages WHERE idempotency_key = $1", request.idempotency_key)
                == 0
            )
            fcm.dead_tokens.add(f"tablet-{customer_id}")  # and on the retry, the tablet turns out dead
            result = await ActivityEnvironment().run(sender.send_once, request)
        finally:
            await push.close()

    assert (result.status, result.channel) == ("sent", "push")
    assert [m["token"] for m in fcm.sent] == [f"phone-{customer_id}"]
    assert email.delivered == []  # the customer has the message: no fallback to email
    row = await pool.fetchrow(
        "SELECT recipient, provider_response FROM messages WHERE idempotency_key = $1", request.idempotency_key
    )
    assert row["provider_response"]["devices"]["tablet"]["delivery"] == "dead"


async def test_a_retry_the_policy_now_refuses_is_recorded_sent_with_the_devices_that_had_it(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with running(FcmFake()) as fcm:
        push = DevicesPushChannel(push_settings(tmp_path, fcm), pool)
        sender = JourneyActivities(pool, {"push": push}, make_settings(consent_default="opt_in"))
        customer_id = await push_customer(pool)
        fcm.unavailable[f"tablet-{customer_id}"] = 1
        request = push_request(customer_id).model_copy(update={"candidates": ["push"]})
        try:
            with pytest.raises(TransientDeliveryError):
                await ActivityEnvironment().run(sender.send_once, request)
            await set_consent(pool, customer_id, "channel", "push", "withdrawn")  # between the two attempts
            result = await ActivityEnvironment().run(sender.send_once, request)
        finally:
            await push.close()

    assert (result.status, result.channel) == ("sent", "push")
    assert [m["token"] for m in fcm.sent] == [f"phone-{customer_id}"]  # the tablet is not pushed after the STOP
    row = await pool.fetchrow(
        "SELECT recipient, choice FROM messages WHERE idempotency_key = $1", request.idempotency_key
    )
    assert row["recipient"] == "devices:phone"
    assert row["choice"]["push_settled"] == "consent_withdrawn:push"
