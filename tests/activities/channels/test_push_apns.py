"""Push to iOS devices over APNs, against a fake that speaks HTTP/2 over TLS and checks what Apple checks.

The fake (tests/support/apns.py) verifies the provider token with the public key of the signing key the adapter
was given, and the adapter trusts the fake only through ``apns_ca_file``: a push it accepted went over verified
TLS, HTTP/2, with a valid ES256 token, the app's topic and an alert payload.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from activities.channels import push as push_module
from activities.channels.base import OutboundMessage, PermanentDeliveryError, TransientDeliveryError
from activities.channels.push import DevicesPushChannel
from config.settings import Settings
from store import devices as device_store
from tests.support.apns import ApnsFake, Tls, running_apns, signing_key_pem

LIVE = "ab" * 32
OTHER = "cd" * 32
DEAD = "ef" * 32


def apns_settings(directory: Path, apns: ApnsFake, tls: Tls | None, **extra: Any) -> Settings:
    values: dict[str, Any] = {**apns.settings(directory, tls), "push_timeout_seconds": 5}
    return Settings(**{**values, **extra})


def push(customer_id: str, title: str = "Still thinking?") -> OutboundMessage:
    return OutboundMessage(
        idempotency_key=f"key-{uuid.uuid4().hex}",
        customer_id=customer_id,
        channel="push",
        journey_id="j",
        step_id="s",
        content={"title": title, "body": "Your cart is saved.", "data": {"cart": 42}, "url": "https://shop/c"},
    )


async def customer_with(pool: asyncpg.Pool, **devices: str) -> str:
    customer_id = f"cust-{uuid.uuid4().hex[:12]}"
    await pool.execute("INSERT INTO customers (id) VALUES ($1)", customer_id)
    for device_id, token in devices.items():
        await device_store.put_device(
            pool, customer_id, device_id, platform="apns", token=token, subscription=None, app="shop", locale="fr"
        )
    return customer_id


async def active(pool: asyncpg.Pool, customer_id: str) -> list[str]:
    return [d.device_id for d in await device_store.devices_of(pool, customer_id, active_only=True)]


async def test_a_push_reaches_the_iphone_over_http2_with_a_valid_token_and_the_rendered_alert(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with running_apns(tmp_path) as (apns, tls):
        customer_id = await customer_with(pool, iphone=LIVE)
        channel = DevicesPushChannel(apns_settings(tmp_path, apns, tls), pool)
        try:
            message = push(customer_id)
            result = await channel.deliver(message)
        finally:
            await channel.close()

    assert [(p.device_token, p.payload["aps"]["alert"]) for p in apns.received] == [
        (LIVE, {"title": "Still thinking?", "body": "Your cart is saved."})
    ]
    sent = apns.received[0]
    assert sent.payload["idempotency_key"] == message.idempotency_key and sent.payload["url"] == "https://shop/c"
    assert (sent.headers["apns-topic"], sent.headers["apns-push-type"]) == (apns.topic, "alert")
    assert 0 < len(sent.headers["apns-collapse-id"].encode()) <= 64
    # The provider token the fake accepted is the one Apple asks for: ES256, our key id, our team id.
    header = jwt.get_unverified_header(sent.provider_token)
    claims = jwt.decode(sent.provider_token, apns.signing_key.public_key(), algorithms=["ES256"])
    assert (header["alg"], header["kid"], claims["iss"]) == ("ES256", apns.key_id, apns.team_id)
    # The message records APNs' apns-id, which is the one the adapter chose (a retry reuses it).
    assert result.provider_message_id == sent.headers["apns-id"]
    assert result.response["devices"]["iphone"] == {
        "platform": "apns",
        "delivery": "sent",
        "attempts": 1,
        "verdict": "sent",
        "status": 200,
        "reason": None,
    }


async def test_the_steps_data_travels_beside_aps_and_cannot_replace_it(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with running_apns(tmp_path) as (apns, tls):
        customer_id = await customer_with(pool, iphone=LIVE)
        channel = DevicesPushChannel(apns_settings(tmp_path, apns, tls), pool)
        message = push(customer_id)
        message = message.model_copy(update={"content": {**message.content, "data": {"aps": "x", "sku": "A1"}}})
        try:
            await channel.deliver(message)
        finally:
            await channel.close()

    [sent] = apns.received
    assert sent.payload["aps"] == {"alert": {"title": "Still thinking?", "body": "Your cart is saved."}}
    assert sent.payload["sku"] == "A1"


async def test_the_provider_token_is_signed_once_and_reused_across_pushes(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with running_apns(tmp_path) as (apns, tls):
        customer_id = await customer_with(pool, iphone=LIVE, ipad=OTHER)
        channel = DevicesPushChannel(apns_settings(tmp_path, apns, tls), pool)
        try:
            for title in ("one", "two", "three"):
                await channel.deliver(push(customer_id, title))
        finally:
            await channel.close()

    # Six pushes, one provider token: a new one within 20 minutes would have been refused (TooManyProviderTokenUpdates).
    assert len(apns.received) == 6 and apns.refused == []
    assert len(apns.provider_tokens) == 1
    assert sorted(p.payload["aps"]["alert"]["title"] for p in apns.received if p.device_token == LIVE) == [
        "one",
        "three",
        "two",
    ]


class Clock:
    """Stands for the ``time`` module in the adapter (and is the fake's clock), so a test can move time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


async def test_the_provider_token_is_renewed_after_50_minutes_and_when_apns_says_it_expired(
    pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two hours ago (PyJWT refuses an iat in the future of the real clock).
    clock = Clock(time.time() - 2 * 3600)
    monkeypatch.setattr(push_module, "time", clock)
    async with running_apns(tmp_path, ApnsFake(clock=clock.time)) as (apns, tls):
        customer_id = await customer_with(pool, iphone=LIVE)
        channel = DevicesPushChannel(apns_settings(tmp_path, apns, tls), pool)
        try:
            await channel.deliver(push(customer_id, "at 0"))
            clock.now += 49 * 60
            await channel.deliver(push(customer_id, "at 49"))
            clock.now += 2 * 60
            await channel.deliver(push(customer_id, "at 51"))
            assert apns.refused == [] and len(apns.provider_tokens) == 2
            # APNs' clock runs 70 minutes ahead of ours: it finds our 0-minute-old token an hour old.
            apns.clock = lambda: clock.now + 70 * 60
            with pytest.raises(TransientDeliveryError):
                await channel.deliver(push(customer_id, "refused"))
            apns.clock = clock.time
            clock.now += 21 * 60
            await channel.deliver(push(customer_id, "renewed"))
        finally:
            await channel.close()

    assert apns.refused == [(403, "ExpiredProviderToken")]
    assert [p.payload["aps"]["alert"]["title"] for p in apns.received] == ["at 0", "at 49", "at 51", "renewed"]
    assert [apns.provider_tokens.index(p.provider_token) for p in apns.received] == [0, 0, 1, 2]


@pytest.mark.parametrize(
    ("mark", "status", "reason"),
    [("dead", 410, "Unregistered"), ("bad", 400, "BadDeviceToken"), ("other_app", 400, "DeviceTokenNotForTopic")],
)
async def test_a_dead_token_deactivates_its_device_and_the_next_push_goes_to_the_other(
    pool: asyncpg.Pool, tmp_path: Path, mark: str, status: int, reason: str
) -> None:
    async with running_apns(tmp_path) as (apns, tls):
        {"dead": apns.dead_tokens, "bad": apns.bad_tokens, "other_app": apns.other_topic_tokens}[mark].add(DEAD)
        customer_id = await customer_with(pool, iphone=LIVE, old_iphone=DEAD)
        channel = DevicesPushChannel(apns_settings(tmp_path, apns, tls), pool)
        try:
            first = await channel.deliver(push(customer_id, "first"))
            assert await active(pool, customer_id) == ["iphone"]
            second = await channel.deliver(push(customer_id, "second"))
        finally:
            await channel.close()

    assert apns.refused == [(status, reason)]
    assert first.response["devices"]["old_iphone"] == {
        "platform": "apns",
        "delivery": "dead",
        "attempts": 1,
        "verdict": "dead",
        "status": status,
        "reason": reason,
    }
    assert list(second.response["devices"]) == ["iphone"]
    assert [(p.device_token, p.payload["aps"]["alert"]["title"]) for p in apns.received] == [
        (LIVE, "first"),
        (LIVE, "second"),
    ]
    old = await device_store.get_device(pool, customer_id, "old_iphone")
    assert old is not None and (old.active, old.deactivated_reason) == (False, "dead_token")


async def test_when_the_only_device_is_unregistered_the_push_fails_for_good(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with running_apns(tmp_path) as (apns, tls):
        apns.dead_tokens.add(DEAD)
        customer_id = await customer_with(pool, old_iphone=DEAD)
        channel = DevicesPushChannel(apns_settings(tmp_path, apns, tls), pool)
        try:
            with pytest.raises(PermanentDeliveryError, match="no device took the push"):
                await channel.deliver(push(customer_id))
        finally:
            await channel.close()
    assert await active(pool, customer_id) == []


async def test_a_token_signed_with_another_key_is_refused_and_retried_without_touching_the_device(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with running_apns(tmp_path) as (apns, tls):
        customer_id = await customer_with(pool, iphone=LIVE)
        settings = apns_settings(tmp_path, apns, tls)
        wrong_key = tmp_path / "AuthKey_other.p8"
        wrong_key.write_text(signing_key_pem(ec.generate_private_key(ec.SECP256R1())))
        channel = DevicesPushChannel(settings.model_copy(update={"apns_key_file": wrong_key}), pool)
        try:
            for _ in range(2):
                with pytest.raises(TransientDeliveryError, match="no device took the push"):
                    await channel.deliver(push(customer_id))
        finally:
            await channel.close()

    assert apns.refused == [(403, "InvalidProviderToken"), (403, "InvalidProviderToken")]
    assert len(apns.presented_tokens) == 1  # signing another would not help, and would count as an update
    assert apns.received == [] and await active(pool, customer_id) == ["iphone"]


async def test_the_fake_is_trusted_only_through_apns_ca_file(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with running_apns(tmp_path) as (apns, _tls):
        customer_id = await customer_with(pool, iphone=LIVE)
        channel = DevicesPushChannel(apns_settings(tmp_path, apns, None), pool)
        try:
            with pytest.raises(TransientDeliveryError) as refused:
                await channel.deliver(push(customer_id))
        finally:
            await channel.close()

    assert "CERTIFICATE_VERIFY_FAILED" in refused.value.response["devices"]["iphone"]["error"]
    assert apns.received == [] and apns.connections == 0


async def test_a_503_for_one_iphone_is_retried_for_that_iphone_only(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with running_apns(tmp_path) as (apns, tls):
        apns.unavailable[OTHER] = 1
        customer_id = await customer_with(pool, iphone=LIVE, ipad=OTHER)
        channel = DevicesPushChannel(apns_settings(tmp_path, apns, tls), pool)
        message = push(customer_id)
        try:
            with pytest.raises(TransientDeliveryError, match=r"1 device\(s\) took the push; 1 to try again"):
                await channel.deliver(message)
            result = await channel.deliver(message)
        finally:
            await channel.close()

    assert apns.refused == [(503, "ServiceUnavailable")]
    assert sorted(p.device_token for p in apns.received) == sorted([LIVE, OTHER])  # each exactly once
    assert {d: (r["delivery"], r["attempts"]) for d, r in result.response["devices"].items()} == {
        "iphone": ("sent", 1),
        "ipad": ("sent", 2),
    }
    assert await active(pool, customer_id) == ["iphone", "ipad"]
