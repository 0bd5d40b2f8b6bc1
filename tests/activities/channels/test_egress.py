"""Webhook destinations are checked on the address a connection goes to (server-side request forgery)."""

from __future__ import annotations

import httpx
import pytest

from activities.channels.base import OutboundMessage, PermanentDeliveryError
from activities.channels.egress import EgressRefusedError, guarded_client, is_public
from activities.channels.webhook import WebhookChannel
from config.settings import Settings
from tests.support.webhooks import Reply, WebhookSink

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/hook",
    "http://127.1:{port}/hook",
    "http://0x7f000001:{port}/hook",
    "http://2130706433:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://[::1]:{port}/hook",
    "http://localhost:{port}/hook",
]


def message(url: str) -> OutboundMessage:
    return OutboundMessage(
        idempotency_key="j:c:1:hook",
        customer_id="c",
        channel="webhook",
        recipient=None,
        content={"url": url, "payload": {"hello": "world"}},
        journey_id="j",
        step_id="hook",
    )


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
async def test_webhook_channel_refuses_loopback_in_any_spelling(webhook_sink: WebhookSink, spelling: str) -> None:
    channel = WebhookChannel(Settings(_env_file=None, webhook_allow_hosts=[]))  # type: ignore[call-arg]
    try:
        with pytest.raises(PermanentDeliveryError):
            await channel.deliver(message(spelling.format(port=webhook_sink.port)))
    finally:
        await channel.close()
    assert webhook_sink.requests == []


async def test_allowed_network_is_called(webhook_sink: WebhookSink) -> None:
    channel = WebhookChannel(Settings(_env_file=None, webhook_allow_hosts=["127.0.0.0/8"]))  # type: ignore[call-arg]
    try:
        result = await channel.deliver(message(webhook_sink.url))
    finally:
        await channel.close()
    assert result.response is not None and result.response["status"] == 200
    assert len(webhook_sink.requests) == 1


async def test_a_redirect_to_loopback_is_refused_even_when_followed(webhook_sink: WebhookSink) -> None:
    # The first hop is allowed by name; the redirect goes to another spelling of loopback, which is not.
    webhook_sink.enqueue(Reply(302, headers={"location": f"http://127.0.0.1:{webhook_sink.port}/secret"}))
    async with guarded_client(["localhost"], timeout=5, follow_redirects=True) as client:
        with pytest.raises(EgressRefusedError):
            await client.get(f"http://localhost:{webhook_sink.port}/start")
    assert [r.path for r in webhook_sink.requests] == ["/start"]


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "::",
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
    ],
)
def test_private_and_reserved_addresses_are_not_public(address: str) -> None:
    import ipaddress

    assert not is_public(ipaddress.ip_address(address))


def test_public_addresses_are_public() -> None:
    import ipaddress

    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert is_public(ipaddress.ip_address("2606:4700::1111"))


async def test_unresolvable_host_is_a_connect_error() -> None:
    async with guarded_client([], timeout=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://no-such-host.invalid/")
