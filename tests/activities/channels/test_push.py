"""Push to registered devices over FCM HTTP v1 and Web Push, against fakes that check the protocol.

The Web Push fake decrypts every payload with the subscription's private key: a push it accepted was really
encrypted for that browser. Dead tokens (FCM ``UNREGISTERED``, Web Push ``410``) deactivate their device at once
and the next push goes to the devices left.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from activities.channels.base import OutboundMessage, PermanentDeliveryError, TransientDeliveryError
from activities.channels.push import DevicesPushChannel
from config.settings import Settings
from store import deliveries as delivery_store
from store import devices as device_store
from tests.support.providers import FcmFake, WebPushFake, b64url, running


def vapid_key() -> tuple[str, str]:
    """A VAPID key pair: the private key as PEM, the public key as the browser's applicationServerKey."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return pem, b64url(point)


def push(customer_id: str, title: str = "Still thinking?") -> OutboundMessage:
    return OutboundMessage(
        idempotency_key=f"key-{uuid.uuid4().hex}",
        customer_id=customer_id,
        channel="push",
        journey_id="j",
        step_id="s",
        content={"title": title, "body": "Your cart is saved.", "data": {"cart": 42}},
    )


async def customer(pool: asyncpg.Pool) -> str:
    customer_id = f"cust-{uuid.uuid4().hex[:12]}"
    await pool.execute("INSERT INTO customers (id) VALUES ($1)", customer_id)
    return customer_id


def push_settings(tmp_path: Path, fcm: FcmFake, web: WebPushFake | None = None, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "fcm_project_id": fcm.project_id,
        "fcm_service_account_file": fcm.service_account_file(tmp_path),
        "fcm_base_url": fcm.url,
    }
    if web is not None:
        pem, public = vapid_key()
        web.vapid_public_key = public
        values.update(vapid_private_key=pem, vapid_subject="mailto:ops@example.com")
    return Settings(**{**values, **extra})


async def test_fcm_token_is_fetched_once_and_a_dead_token_deactivates_its_device(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with running(FcmFake()) as fcm:
        fcm.dead_tokens.add("tok-dead")
        customer_id = await customer(pool)
        for device_id, token in (("phone", "tok-live"), ("old-phone", "tok-dead")):
            await device_store.put_device(
                pool, customer_id, device_id, platform="fcm", token=token, subscription=None, app="shop", locale="fr"
            )
        channel = DevicesPushChannel(push_settings(tmp_path, fcm), pool)
        try:
            first = await channel.deliver(push(customer_id, "first"))
            second = await channel.deliver(push(customer_id, "second"))
        finally:
            await channel.close()

    assert fcm.token_requests == 1  # cached until it expires
    assert [(m["token"], m["notification"]["title"]) for m in fcm.sent] == [
        ("tok-live", "first"),
        ("tok-live", "second"),
    ]
    assert fcm.sent[0]["data"]["cart"] == "42"
    assert first.response["devices"]["old-phone"]["verdict"] == "dead"
    assert "old-phone" not in second.response["devices"]  # deactivated by the first answer
    old = await device_store.get_device(pool, customer_id, "old-phone")
    assert old is not None and (old.active, old.deactivated_reason) == (False, "dead_token")


async def test_web_push_is_encrypted_for_the_subscription_and_a_410_deactivates_it(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with running(FcmFake()) as fcm, running(WebPushFake()) as web:
        customer_id = await customer(pool)
        laptop, tablet = web.subscribe(), web.subscribe()
        for device_id, subscriber in (("laptop", laptop), ("tablet", tablet)):
            await device_store.put_device(
                pool,
                customer_id,
                device_id,
                platform="web",
                token=None,
                subscription=subscriber.subscription(),
                app=None,
                locale=None,
            )
        web.gone.add(tablet.id)
        channel = DevicesPushChannel(push_settings(tmp_path, fcm, web), pool)
        try:
            message = push(customer_id)
            await channel.deliver(message)
            await channel.deliver(push(customer_id, "again"))
        finally:
            await channel.close()

    assert [(sub, payload["title"]) for sub, payload, _ in web.received] == [
        (laptop.id, "Still thinking?"),
        (laptop.id, "again"),
    ]
    _, payload, headers = web.received[0]
    assert payload["body"] == "Your cart is saved." and payload["idempotency_key"] == message.idempotency_key
    assert len(headers["topic"]) <= 32
    assert [d.device_id for d in await device_store.devices_of(pool, customer_id, active_only=True)] == ["laptop"]


async def test_a_web_subscription_pointing_at_a_private_address_is_never_called_and_its_device_goes(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """A subscription's endpoint is whatever the app (any write key) registered: the worker must not POST to its
    own network for it. With no host allowed, the loopback fake is never reached and the device is deactivated."""
    async with running(FcmFake()) as fcm, running(WebPushFake()) as web:
        customer_id = await customer(pool)
        await device_store.put_device(
            pool,
            customer_id,
            "laptop",
            platform="web",
            token=None,
            subscription=web.subscribe().subscription(),
            app=None,
            locale=None,
        )
        channel = DevicesPushChannel(push_settings(tmp_path, fcm, web, webhook_allow_hosts=[]), pool)
        try:
            with pytest.raises(PermanentDeliveryError) as refused:
                await channel.deliver(push(customer_id))
        finally:
            await channel.close()

    assert web.received == []
    assert "endpoint refused" in str(refused.value.response)
    assert await device_store.devices_of(pool, customer_id, active_only=True) == []


async def test_no_device_left_is_a_permanent_failure_so_the_journey_falls_back(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with running(FcmFake()) as fcm:
        fcm.dead_tokens.add("tok-dead")
        customer_id = await customer(pool)
        await device_store.put_device(
            pool, customer_id, "only", platform="fcm", token="tok-dead", subscription=None, app=None, locale=None
        )
        channel = DevicesPushChannel(push_settings(tmp_path, fcm), pool)
        try:
            with pytest.raises(PermanentDeliveryError, match="no device took the push"):
                await channel.deliver(push(customer_id))
            with pytest.raises(PermanentDeliveryError, match="no active push device"):
                await channel.deliver(push(customer_id))
        finally:
            await channel.close()


async def fcm_customer(pool: asyncpg.Pool, **devices: str) -> str:
    customer_id = await customer(pool)
    for device_id, token in devices.items():
        await device_store.put_device(
            pool, customer_id, device_id, platform="fcm", token=token, subscription=None, app="shop", locale=None
        )
    return customer_id


async def test_a_retry_after_one_device_failed_delivers_only_to_that_device(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with running(FcmFake()) as fcm:
        customer_id = await fcm_customer(pool, phone="tok-a", tablet="tok-b")
        fcm.unavailable["tok-b"] = 1
        channel = DevicesPushChannel(push_settings(tmp_path, fcm), pool)
        message = push(customer_id)
        try:
            with pytest.raises(TransientDeliveryError, match=r"1 device\(s\) took the push; 1 to try again"):
                await channel.deliver(message)
            result = await channel.deliver(message)  # what Temporal's retry of the send does
            again = await channel.deliver(message)  # a third call (a replay) sends nothing more
        finally:
            await channel.close()

    assert sorted(m["token"] for m in fcm.sent) == ["tok-a", "tok-b"]  # each device exactly once
    assert result.response["devices"]["tablet"]["attempts"] == 2
    assert result.response["devices"]["phone"] == {"platform": "fcm", "delivery": "sent", "attempts": 1}
    assert set(result.provider_message_id.split(",")) == {  # type: ignore[union-attr]
        d.provider_id for d in await delivery_store.deliveries_of(pool, message.idempotency_key)
    }
    assert again.provider_message_id == result.provider_message_id
    rows = {
        d.device_id: (d.status, d.attempts) for d in await delivery_store.deliveries_of(pool, message.idempotency_key)
    }
    assert rows == {"phone": ("sent", 1), "tablet": ("sent", 2)}


async def test_a_device_that_keeps_failing_is_given_up_and_the_push_counts_as_sent(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with running(FcmFake()) as fcm:
        customer_id = await fcm_customer(pool, phone="tok-a", tablet="tok-b")
        fcm.unavailable["tok-b"] = 100
        channel = DevicesPushChannel(push_settings(tmp_path, fcm, push_device_attempts=3), pool)
        message = push(customer_id)
        try:
            for _ in range(2):
                with pytest.raises(TransientDeliveryError):
                    await channel.deliver(message)
            result = await channel.deliver(message)
        finally:
            await channel.close()

    assert [m["token"] for m in fcm.sent] == ["tok-a"]
    assert fcm.unavailable["tok-b"] == 97  # tried three times, then no more
    assert result.response["devices"]["tablet"]["delivery"] == "gave_up"
    tablet = await device_store.get_device(pool, customer_id, "tablet")
    assert tablet is not None and tablet.active  # not dead: the next push tries it again


async def test_when_no_device_takes_it_after_every_attempt_the_push_fails_for_good(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with running(FcmFake()) as fcm:
        customer_id = await fcm_customer(pool, phone="tok-a")
        fcm.unavailable["tok-a"] = 100
        channel = DevicesPushChannel(push_settings(tmp_path, fcm, push_device_attempts=2), pool)
        message = push(customer_id)
        try:
            with pytest.raises(TransientDeliveryError, match="no device took the push yet; 1 to try again"):
                await channel.deliver(message)
            with pytest.raises(PermanentDeliveryError, match="no device took the push"):
                await channel.deliver(message)  # the journey falls back to its next channel
        finally:
            await channel.close()
    assert fcm.sent == []


async def test_a_pending_device_deleted_before_the_retry_is_not_waited_for(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with running(FcmFake()) as fcm:
        customer_id = await fcm_customer(pool, phone="tok-a", tablet="tok-b")
        fcm.unavailable["tok-b"] = 1
        channel = DevicesPushChannel(push_settings(tmp_path, fcm), pool)
        message = push(customer_id)
        try:
            with pytest.raises(TransientDeliveryError):
                await channel.deliver(message)
            assert await device_store.delete_device(pool, customer_id, "tablet")
            result = await channel.deliver(message)
        finally:
            await channel.close()
    assert [m["token"] for m in fcm.sent] == ["tok-a"]
    assert result.response["devices"]["tablet"]["delivery"] == "pending"


async def test_a_token_of_another_firebase_project_deactivates_its_device(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with running(FcmFake()) as fcm:
        fcm.other_sender_tokens.add("tok-other")
        customer_id = await fcm_customer(pool, phone="tok-a", old="tok-other")
        channel = DevicesPushChannel(push_settings(tmp_path, fcm), pool)
        try:
            first = await channel.deliver(push(customer_id, "first"))
            second = await channel.deliver(push(customer_id, "second"))
        finally:
            await channel.close()
    assert first.response["devices"]["old"]["codes"] == ["SENDER_ID_MISMATCH"]
    assert list(second.response["devices"]) == ["phone"]
    old = await device_store.get_device(pool, customer_id, "old")
    assert old is not None and (old.active, old.deactivated_reason) == (False, "dead_token")


async def test_a_wrong_project_deactivates_nothing(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with running(FcmFake()) as fcm:
        customer_id = await fcm_customer(pool, phone="tok-a")
        channel = DevicesPushChannel(push_settings(tmp_path, fcm, fcm_project_id="someone-else"), pool)
        try:
            with pytest.raises(PermanentDeliveryError, match="no device took the push"):
                await channel.deliver(push(customer_id))
        finally:
            await channel.close()
    phone = await device_store.get_device(pool, customer_id, "phone")
    assert phone is not None and phone.active


async def test_send_to_device_answers_for_that_device_alone_and_records_nothing(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """A test send's path: one device given by hand, whatever the customer's stored devices; a dead answer is
    returned, not acted on, even when a stored device has that very token."""
    async with running(FcmFake()) as fcm:
        fcm.dead_tokens.add("tok-dead")
        customer_id = await fcm_customer(pool, phone="tok-dead", tablet="tok-b")
        [stored, _] = await device_store.devices_of(pool, customer_id)
        channel = DevicesPushChannel(push_settings(tmp_path, fcm), pool, platforms=["fcm"])
        live, dead = (dataclasses.replace(stored, device_id="test", token=t) for t in ("tok-given", "tok-dead"))
        message = push(customer_id)
        try:
            sent = await channel.send_to_device(live, message)
            refused = await channel.send_to_device(dead, message)
        finally:
            await channel.close()

    assert [m["token"] for m in fcm.sent] == ["tok-given"]  # not tok-b, the customer's other device
    assert sent.verdict == "sent" and sent.provider_id and sent.provider_id.startswith("projects/")
    assert (refused.verdict, refused.detail["codes"]) == ("dead", ["UNREGISTERED"])
    assert await delivery_store.deliveries_of(pool, message.idempotency_key) == []
    assert [(d.device_id, d.active) for d in await device_store.devices_of(pool, customer_id)] == [
        ("phone", True),
        ("tablet", True),
    ]
