"""The in-app inbox channel: a redelivered message is stored once; a message without a body is refused."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from activities.channels.base import OutboundMessage, PermanentDeliveryError
from activities.channels.inbox import InboxChannel


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def message(key: str, customer: str, content: dict[str, object]) -> OutboundMessage:
    return OutboundMessage(
        idempotency_key=key,
        customer_id=customer,
        channel="in_app",
        journey_id="j",
        step_id="s",
        content=content,
    )


async def test_inbox_stores_a_redelivered_message_once(pool: asyncpg.Pool) -> None:
    channel = InboxChannel(pool)
    key, customer = uid("k"), uid("c")
    msg = message(key, customer, {"title": "Hi", "body": "Welcome aboard", "data": {"cta": "/start"}})

    first = await channel.deliver(msg)
    again = await channel.deliver(msg)

    assert again == first
    assert first.provider_message_id == f"inbox:{first.response['inbox_id']}"
    rows = await pool.fetch("SELECT id, title, body, data FROM inbox_messages WHERE customer_id = $1", customer)
    assert [tuple(r) for r in rows] == [(first.response["inbox_id"], "Hi", "Welcome aboard", {"cta": "/start"})]
    await channel.close()


async def test_inbox_refuses_a_message_without_body(pool: asyncpg.Pool) -> None:
    customer = uid("c")
    with pytest.raises(PermanentDeliveryError):
        await InboxChannel(pool).deliver(message(uid("k"), customer, {"title": "Hi"}))
    assert await pool.fetchval("SELECT count(*) FROM inbox_messages WHERE customer_id = $1", customer) == 0
