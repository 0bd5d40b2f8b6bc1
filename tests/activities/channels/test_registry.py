"""The channel registry: which backend serves each channel, from the settings."""

from __future__ import annotations

import httpx
import structlog

from activities.channels.base import (
    DeliveryResult,
    OutboundMessage,
)
from activities.channels.console import ConsoleChannel
from activities.channels.email import SmtpEmailChannel
from activities.channels.registry import CHANNEL_NAMES, build_channels, close_channels
from activities.channels.webhook import WebhookChannel
from tests.support.channels import make_message, make_settings
from tests.support.webhooks import WebhookSink


class FakeInbox:
    name = "in_app"

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        return DeliveryResult(provider_message_id="inbox:1")

    async def close(self) -> None:
        pass


async def test_registry_follows_the_default_settings() -> None:
    inbox = FakeInbox()
    channels = build_channels(make_settings(), inbox=inbox)
    try:
        assert tuple(channels) == CHANNEL_NAMES
        assert isinstance(channels["email"], SmtpEmailChannel)
        assert isinstance(channels["sms"], ConsoleChannel) and channels["sms"].name == "sms"
        assert isinstance(channels["push"], ConsoleChannel) and channels["push"].name == "push"
        assert channels["in_app"] is inbox
        assert isinstance(channels["webhook"], WebhookChannel)
    finally:
        await close_channels(channels)


async def test_registry_without_inbox_falls_back_to_console_and_says_so() -> None:
    with structlog.testing.capture_logs() as logs:
        channels = build_channels(make_settings(channel_in_app="inbox"))
    assert isinstance(channels["in_app"], ConsoleChannel) and channels["in_app"].name == "in_app"
    assert any(e["log_level"] == "warning" and e.get("channel") == "in_app" for e in logs)
    await close_channels(channels)


async def test_registry_routes_channels_to_configured_backends(webhook_sink: WebhookSink) -> None:
    settings = make_settings(
        channel_email="console", channel_sms="webhook", channel_webhook="console", webhook_url=webhook_sink.url
    )
    async with httpx.AsyncClient() as client:
        channels = build_channels(settings, http_client=client)
        assert isinstance(channels["email"], ConsoleChannel)
        assert isinstance(channels["webhook"], ConsoleChannel)
        sms = channels["sms"]
        assert isinstance(sms, WebhookChannel) and sms.name == "sms"
        await sms.deliver(make_message(channel="sms", recipient="+33600000000", content={"text": "Hi"}))
        await close_channels(channels)
        assert not client.is_closed

    [request] = await webhook_sink.wait_for(1)
    assert request.json()["payload"] == {"text": "Hi"}
