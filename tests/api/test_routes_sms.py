"""Twilio's callbacks: signed status callbacks become delivery receipts, inbound STOP/START change SMS consent,
HELP is answered, and a tampered signature is refused."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from store import customers as customer_store
from store import messages as message_store
from tests.support.providers import TwilioFake
from tests.support.stack import make_settings
from tests.support.webhooks import Reply, WebhookSink

BASE = "http://parcours.test"
STATUS = f"{BASE}/v1/providers/twilio/status"
INBOUND = f"{BASE}/v1/providers/twilio/inbound"


@pytest_asyncio.fixture
async def twilio(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> AsyncIterator[TwilioFake]:
    """A Twilio fake whose callbacks reach the API (no server needed: it signs and posts like Twilio)."""
    fake = TwilioFake()
    settings = make_settings(twilio_auth_token=fake.auth_token, public_base_url=BASE)
    app = create_app(settings, pool=pool, client=time_skipping_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        fake.callback_client = http
        yield fake


async def customer_with_phone(pool: asyncpg.Pool, phone: str) -> str:
    customer_id = f"cust-{uuid.uuid4().hex[:12]}"
    await customer_store.upsert_customer(pool, customer_id, phone=phone)
    await customer_store.record_consent(pool, customer_id, "channel", "sms", "granted")
    return customer_id


def phone() -> str:
    return "+336" + str(uuid.uuid4().int)[:8]


async def sms_message(pool: asyncpg.Pool, customer_id: str, to: str, sid: str) -> str:
    key = f"key-{uuid.uuid4().hex}"
    await message_store.insert_message(
        pool,
        message_store.NewMessage(
            idempotency_key=key,
            journey_id="j",
            journey_version=1,
            step_id="s",
            customer_id=customer_id,
            entry_id="e",
            channel="sms",
            topic=None,
            kind="marketing",
            status="sent",
            reason=None,
            recipient=to,
            rendered={"text": "hi"},
            provider_message_id=sid,
            provider_response=None,
            error=None,
            attempts=1,
            decided_at=datetime.now(UTC),
            choice=None,
        ),
    )
    return key


async def sms_consent(pool: asyncpg.Pool, customer_id: str) -> tuple[str, str]:
    row = await pool.fetchrow(
        "SELECT status, source FROM consent_current WHERE customer_id = $1 AND scope = 'channel' AND name = 'sms'",
        customer_id,
    )
    assert row is not None
    return row["status"], row["source"]


async def test_status_callbacks_stamp_delivered_and_failed(twilio: TwilioFake, pool: asyncpg.Pool) -> None:
    number = phone()
    customer_id = await customer_with_phone(pool, number)
    delivered, undelivered = "SM" + uuid.uuid4().hex, "SM" + uuid.uuid4().hex
    await sms_message(pool, customer_id, number, delivered)
    await sms_message(pool, customer_id, number, undelivered)
    for sid, status, extra in (
        (delivered, "sent", {}),
        (delivered, "delivered", {}),
        (delivered, "sent", {}),  # out of order: the final status stays
        (undelivered, "undelivered", {"ErrorCode": "30003"}),
    ):
        params = {"MessageSid": sid, "MessageStatus": status, "To": number, "AccountSid": twilio.account_sid, **extra}
        response = await twilio.post_signed(STATUS, params)
        assert response.status_code == 200, response.text
    rows = {
        r["provider_message_id"]: r
        for r in await pool.fetch(
            "SELECT provider_message_id, provider_status, provider_error, delivered_at, failed_at FROM messages"
            " WHERE customer_id = $1",
            customer_id,
        )
    }
    assert rows[delivered]["provider_status"] == "delivered" and rows[delivered]["delivered_at"] is not None
    assert rows[delivered]["failed_at"] is None
    assert rows[undelivered]["failed_at"] is not None and rows[undelivered]["provider_error"] == "30003"
    # 30003 (handset off or out of coverage) passes: nothing is suppressed or withdrawn.
    assert await sms_consent(pool, customer_id) == ("granted", "api")


async def test_a_callback_that_arrives_before_the_send_recorded_its_sid_still_lands(
    twilio: TwilioFake, pool: asyncpg.Pool
) -> None:
    """Twilio answers the POST, then may call back before the send's transaction has committed the SID."""
    number = phone()
    customer_id = await customer_with_phone(pool, number)
    sid = "SM" + uuid.uuid4().hex
    params = {"MessageSid": sid, "MessageStatus": "delivered", "To": number, "AccountSid": twilio.account_sid}
    callback = asyncio.create_task(twilio.post_signed(STATUS, params))
    await asyncio.sleep(0.3)  # the callback is in flight; the send commits its row now
    await sms_message(pool, customer_id, number, sid)
    response = await callback
    assert response.status_code == 200 and response.json()["status"] != "unknown_message", response.text
    row = await pool.fetchrow("SELECT provider_status, delivered_at FROM messages WHERE provider_message_id = $1", sid)
    assert row["provider_status"] == "delivered" and row["delivered_at"] is not None


async def test_an_opted_out_code_withdraws_consent_and_a_dead_number_is_suppressed(
    twilio: TwilioFake, pool: asyncpg.Pool
) -> None:
    opted, dead = phone(), phone()
    opted_customer, dead_customer = await customer_with_phone(pool, opted), await customer_with_phone(pool, dead)
    for customer_id, number, code in ((opted_customer, opted, "21610"), (dead_customer, dead, "30005")):
        sid = "SM" + uuid.uuid4().hex
        await sms_message(pool, customer_id, number, sid)
        params = {"MessageSid": sid, "MessageStatus": "failed", "ErrorCode": code, "To": number}
        assert (await twilio.post_signed(STATUS, params)).status_code == 200
    assert await sms_consent(pool, opted_customer) == ("withdrawn", "sms_keyword")
    assert await pool.fetchval("SELECT reason FROM suppressions WHERE channel = 'sms' AND address = $1", dead) == (
        "hard_bounce"
    )
    assert await sms_consent(pool, dead_customer) == ("withdrawn", "bounce")


async def test_a_tampered_or_missing_signature_is_refused(twilio: TwilioFake, pool: asyncpg.Pool) -> None:
    number = phone()
    customer_id = await customer_with_phone(pool, number)
    sid = "SM" + uuid.uuid4().hex
    await sms_message(pool, customer_id, number, sid)
    params = {"MessageSid": sid, "MessageStatus": "failed", "To": number}
    tampered = await twilio.post_signed(STATUS, params, tamper=True)  # signed "failed", sent "delivered"
    assert tampered.status_code == 403 and tampered.json()["error"]["field"] == "x-twilio-signature"
    assert twilio.callback_client is not None
    unsigned = await twilio.callback_client.post(INBOUND, data={"From": number, "Body": "STOP"})
    assert unsigned.status_code == 403
    assert await pool.fetchval("SELECT provider_status FROM messages WHERE provider_message_id = $1", sid) is None
    assert await sms_consent(pool, customer_id) == ("granted", "api")


async def test_stop_keywords_withdraw_start_grants_help_answers(twilio: TwilioFake, pool: asyncpg.Pool) -> None:
    number = phone()
    customer_id = await customer_with_phone(pool, number)
    for body, expected in (
        ("  stop. ", ("withdrawn", "sms_keyword")),
        ("START", ("granted", "sms_keyword")),
        ("Arrêt", ("withdrawn", "sms_keyword")),
        ("unstop", ("granted", "sms_keyword")),
        ("STOP SMS", ("withdrawn", "sms_keyword")),
        ("what is this?", ("withdrawn", "sms_keyword")),  # not a keyword: nothing changes
    ):
        response = await twilio.inbound(INBOUND, number, body)
        assert response.status_code == 200 and "<Message>" not in response.text
        assert await sms_consent(pool, customer_id) == expected, body
    help_reply = await twilio.inbound(INBOUND, number, "help")
    assert help_reply.headers["content-type"].startswith("application/xml")
    assert "reply STOP to stop receiving messages" in help_reply.text


# --- the generic HTTP provider's inbound route --------------------------------------------------------------------

HTTP_INBOUND = f"{BASE}/v1/providers/sms/inbound"
SECRET = "inbound-secret-for-tests"


def signed_inbound(
    body: dict[str, Any], *, secret: str = SECRET, at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers as the provider sends them (README: X-Parcours-Timestamp, X-Parcours-Signature)."""
    raw = json.dumps(body).encode()
    timestamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return raw, {
        "content-type": "application/json",
        "x-parcours-timestamp": timestamp,
        "x-parcours-signature": f"v1={digest}",
    }


@pytest_asyncio.fixture
async def http_provider(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, webhook_sink: WebhookSink
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the generic HTTP SMS provider configured; its outbound SMS go to the webhook sink."""
    settings = make_settings(
        sms_http_inbound_secret=SECRET,
        sms_http_url=webhook_sink.url,
        sms_http_from="Shop",
        sms_help_text="Shop: reply STOP to stop.",
    )
    app = create_app(settings, pool=pool, client=time_skipping_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        yield http


async def test_http_provider_inbound_stop_start_and_help_answered_through_the_provider(
    http_provider: httpx.AsyncClient, pool: asyncpg.Pool, webhook_sink: WebhookSink
) -> None:
    number = phone()
    customer_id = await customer_with_phone(pool, number)
    webhook_sink.set_default(Reply(200, {"id": "reply-1"}))

    for text, keyword, expected in (
        ("Stop!", "stop", ("withdrawn", "sms_keyword")),
        ("start", "start", ("granted", "sms_keyword")),
        ("hello there", None, ("granted", "sms_keyword")),
    ):
        raw, headers = signed_inbound({"from": number, "text": text, "to": "+15550000"})
        response = await http_provider.post(HTTP_INBOUND, content=raw, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["keyword"] == keyword
        assert await sms_consent(pool, customer_id) == expected, text
    assert webhook_sink.requests == []  # no keyword but HELP sends anything

    raw, headers = signed_inbound({"from": number, "text": "HELP", "id": "in-7"})
    answer = await http_provider.post(HTTP_INBOUND, content=raw, headers=headers)
    assert answer.json() == {"status": "ok", "keyword": "help", "customers": 0, "replied": True}
    [reply] = webhook_sink.requests
    assert reply.json() == {"to": number, "from": "Shop", "text": "Shop: reply STOP to stop."}
    assert reply.headers["idempotency-key"].startswith("sms-reply:")


async def test_http_provider_inbound_refuses_bad_signatures_old_timestamps_and_replays(
    http_provider: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    number = phone()
    customer_id = await customer_with_phone(pool, number)
    raw, headers = signed_inbound({"from": number, "text": "STOP"})

    wrong_key = signed_inbound({"from": number, "text": "STOP"}, secret="guess")[1]
    tampered = raw.replace(b"STOP", b"STAR")
    stale_raw, stale = signed_inbound({"from": number, "text": "STOP"}, at=time.time() - 400)
    future_raw, future = signed_inbound({"from": number, "text": "STOP"}, at=time.time() + 400)
    moved = {**headers, "x-parcours-timestamp": str(int(headers["x-parcours-timestamp"]) + 1)}
    for body, sent in (
        (raw, wrong_key),
        (tampered, headers),
        (stale_raw, stale),
        (future_raw, future),
        (raw, moved),  # the timestamp is signed: moving it breaks the signature
        (raw, {"content-type": "application/json"}),
    ):
        refused = await http_provider.post(HTTP_INBOUND, content=body, headers=sent)
        assert refused.status_code == 403, (sent, refused.text)
    assert await sms_consent(pool, customer_id) == ("granted", "api")

    first = await http_provider.post(HTTP_INBOUND, content=raw, headers=headers)
    assert first.json()["keyword"] == "stop"
    await customer_store.record_consent(pool, customer_id, "channel", "sms", "granted")
    replayed = await http_provider.post(HTTP_INBOUND, content=raw, headers=headers)
    assert replayed.status_code == 200 and replayed.json() == {"status": "duplicate"}
    assert await sms_consent(pool, customer_id) == ("granted", "api")  # the replay changed nothing


async def test_http_provider_inbound_names_a_bad_field_and_is_404_when_unconfigured(
    http_provider: httpx.AsyncClient, twilio: TwilioFake
) -> None:
    for body, field in (({"text": "STOP"}, "from"), ({"from": "+33600000000", "text": 5}, "text")):
        raw, headers = signed_inbound(body)
        response = await http_provider.post(HTTP_INBOUND, content=raw, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field
    raw, headers = signed_inbound({"from": "+33600000000", "text": "STOP"})
    assert twilio.callback_client is not None  # an app with Twilio only
    unconfigured = await twilio.callback_client.post(HTTP_INBOUND, content=raw, headers=headers)
    assert unconfigured.status_code == 404
