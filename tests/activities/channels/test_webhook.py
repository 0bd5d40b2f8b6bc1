"""The webhook channel: signed JSON to the step's or the configured URL; statuses map to permanent or transient."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from activities.channels.base import (
    DeliveryResult,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from activities.channels.webhook import WebhookChannel
from tests.support.channels import make_message, make_settings
from tests.support.mail import free_port
from tests.support.webhooks import Reply, WebhookSink

SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLXBhcmNvdXJzLXdlYmhvb2tz"


def webhook_message(**content: Any) -> OutboundMessage:
    return make_message(
        channel="webhook",
        recipient=None,
        step_id="notify-crm",
        content={"payload": {"event": "signed_up", "plan": "pro"}, **content},
    )


async def test_webhook_posts_signed_json(webhook_sink: WebhookSink) -> None:
    settings = make_settings(webhook_url=webhook_sink.url, webhook_secret=SECRET)
    channel = WebhookChannel(settings)
    try:
        result = await channel.deliver(webhook_message())
    finally:
        await channel.close()

    [request] = await webhook_sink.wait_for(1)
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    key = "welcome:cust-1:1:send-welcome"
    assert request.headers["webhook-id"] == key
    assert request.headers["idempotency-key"] == key
    verified = Webhook(SECRET).verify(request.body, request.headers)
    assert (
        verified
        == request.json()
        == {
            "type": "parcours.message",
            "idempotency_key": key,
            "customer_id": "cust-1",
            "journey_id": "welcome",
            "step_id": "notify-crm",
            "payload": {"event": "signed_up", "plan": "pro"},
        }
    )
    assert result == DeliveryResult(provider_message_id=key, response={"status": 200, "body": {"ok": True}})


async def test_webhook_signature_fails_with_another_secret(webhook_sink: WebhookSink) -> None:
    channel = WebhookChannel(make_settings(webhook_url=webhook_sink.url, webhook_secret=SECRET))
    try:
        await channel.deliver(webhook_message())
    finally:
        await channel.close()

    [request] = await webhook_sink.wait_for(1)
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==").verify(request.body, request.headers)


async def test_step_url_wins_and_receiver_message_id_is_kept(webhook_sink: WebhookSink) -> None:
    webhook_sink.enqueue(Reply(202, "queued", headers={"X-Message-Id": "crm-77"}))
    async with httpx.AsyncClient() as client:
        channel = WebhookChannel(make_settings(webhook_url="http://127.0.0.1:9/unused"), client)
        result = await channel.deliver(webhook_message(url=webhook_sink.url.replace("/hook", "/crm")))

    [request] = await webhook_sink.wait_for(1)
    assert request.path == "/crm"
    assert "url" not in request.json()["payload"]
    assert result.provider_message_id == "crm-77"
    assert result.response == {"status": 202, "body": "queued"}


@pytest.mark.parametrize("status", [500, 503, 408, 409, 425, 429])
async def test_webhook_retryable_statuses_are_transient(webhook_sink: WebhookSink, status: int) -> None:
    webhook_sink.enqueue(Reply(status, {"error": "busy"}, headers={"Retry-After": "30"}), 200)
    async with httpx.AsyncClient() as client:
        channel = WebhookChannel(make_settings(webhook_url=webhook_sink.url), client)
        with pytest.raises(TransientDeliveryError) as caught:
            await channel.deliver(webhook_message())
        assert caught.value.response == {"status": status, "body": {"error": "busy"}, "retry_after": "30"}

        result = await channel.deliver(webhook_message())
    assert result.response["status"] == 200
    first, second = await webhook_sink.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
async def test_webhook_client_errors_are_permanent(webhook_sink: WebhookSink, status: int) -> None:
    webhook_sink.set_default(Reply(status, {"error": "bad payload"}))
    async with httpx.AsyncClient() as client:
        channel = WebhookChannel(make_settings(webhook_url=webhook_sink.url), client)
        with pytest.raises(PermanentDeliveryError) as caught:
            await channel.deliver(webhook_message())
    assert caught.value.response == {"status": status, "body": {"error": "bad payload"}}


async def test_long_response_text_is_truncated(webhook_sink: WebhookSink) -> None:
    webhook_sink.set_default(Reply(200, "x" * 5000))
    async with httpx.AsyncClient() as client:
        result = await WebhookChannel(make_settings(webhook_url=webhook_sink.url), client).deliver(webhook_message())
    assert result.response["body"] == "x" * 2000


async def test_webhook_without_any_url_is_permanent() -> None:
    channel = WebhookChannel(make_settings(webhook_url=None))
    try:
        with pytest.raises(PermanentDeliveryError, match="url"):
            await channel.deliver(webhook_message())
    finally:
        await channel.close()


async def test_unreachable_webhook_is_transient() -> None:
    channel = WebhookChannel(make_settings(webhook_url=f"http://127.0.0.1:{free_port()}/hook"))
    try:
        with pytest.raises(TransientDeliveryError):
            await channel.deliver(webhook_message())
    finally:
        await channel.close()


async def test_close_releases_only_a_client_the_channel_created() -> None:
    async with httpx.AsyncClient() as shared:
        await WebhookChannel(make_settings(), shared).close()
        assert not shared.is_closed
    own = WebhookChannel(make_settings())
    await own.close()
    assert own._client.is_closed
