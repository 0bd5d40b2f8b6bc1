"""A batch of sends (a broadcast's chunk) decides under its customers' row locks, then delivers outside any
transaction: a consent change is not held up by a slow SMTP server, a message being delivered counts against caps,
a provider's refusal then a transient failure is recorded with its suppression, and a batch that died delivering is
delivered once more, never a third time."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import asyncpg

from activities.channels.base import (
    DeliveryResult,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from activities.journey import JourneyActivities
from activities.models import SendRequest, SendResult
from store import customers as customer_store
from store import privacy, suppressions
from tests.activities.test_journey import FlakyEmail, batch_of
from tests.support.channels import make_settings
from tests.support.engine import make_customer
from tests.support.stack import eventually

SAFETY = 30
"""Seconds after which a wait that should end at once fails the test instead of hanging it."""


class GatedEmail(FlakyEmail):
    """Delivers only once ``gate`` is set (a slow SMTP server); ``entered`` is set when a delivery begins."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.begun: list[str] = []

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        assert message.recipient is not None
        self.begun.append(message.recipient)
        self.entered.set()
        await self.gate.wait()
        return await super().deliver(message)


async def statuses(pool: asyncpg.Pool, requests: list[SendRequest]) -> dict[str, tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT customer_id, status, reason FROM messages WHERE idempotency_key = ANY($1)",
        [r.idempotency_key for r in requests],
    )
    return {r["customer_id"]: (r["status"], r["reason"]) for r in rows}


async def test_a_consent_change_lands_while_the_batch_delivers_and_the_pending_message_counts_against_caps(
    pool: asyncpg.Pool,
) -> None:
    email = GatedEmail()
    settings = make_settings(consent_default="opt_in", frequency_caps=[{"limit": 1, "per": "1d"}])
    sender = JourneyActivities(pool, {"email": email}, settings)
    customers = [await make_customer(pool) for _ in range(3)]
    requests = batch_of(customers)
    sending = asyncio.create_task(sender.send_batch(requests))
    await asyncio.wait_for(email.entered.wait(), SAFETY)

    # The SMTP server has not answered yet: the chunk's customers' rows are not locked any more.
    await asyncio.wait_for(customer_store.record_consent(pool, customers[0], "channel", "email", "withdrawn"), SAFETY)
    assert not sending.done() and email.delivered == []
    assert await statuses(pool, requests) == {c: ("pending", None) for c in customers}
    # Another marketing send to a recipient meanwhile sees the message being delivered against the daily cap.
    [other] = batch_of([customers[1]])
    capped = await asyncio.wait_for(sender.send_once(other), SAFETY)
    assert (capped.status, capped.reason) == ("skipped", "frequency_cap: global cap: 1 per 1d")

    email.gate.set()
    answers = await sending
    # Decided before the withdrawal, so sent, as if the withdrawal had come a moment later.
    assert [a.status for a in answers if isinstance(a, SendResult)] == ["sent"] * 3
    assert await statuses(pool, requests) == {c: ("sent", None) for c in customers}
    again = await sender.send_batch(requests)
    assert all(isinstance(a, SendResult) and a.duplicate for a in again)
    assert len(email.delivered) == 3


class FirstThenGatedEmail(GatedEmail):
    """Delivers the first message at once and the others once ``gate`` is set."""

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        if not self.delivered and not self.begun:
            self.begun.append(str(message.recipient))
            return await FlakyEmail.deliver(self, message)
        return await super().deliver(message)


async def test_a_message_sent_is_recorded_while_the_batchs_other_sends_are_still_delivering(
    pool: asyncpg.Pool,
) -> None:
    """A worker that dies mid-batch leaves its retry only what had not been recorded to deliver once more: a sent
    message's row says so within a moment, not when the whole batch is done."""
    email = FirstThenGatedEmail()
    sender = JourneyActivities(pool, {"email": email}, make_settings(consent_default="opt_in"))
    customers = [await make_customer(pool) for _ in range(3)]
    requests = batch_of(customers)
    sending = asyncio.create_task(sender.send_batch(requests, concurrency=3))
    await asyncio.wait_for(email.entered.wait(), SAFETY)
    emails = {
        r["email"]: r["id"] for r in await pool.fetch("SELECT id, email FROM customers WHERE id = ANY($1)", customers)
    }
    first = emails[email.delivered[0]]

    async def first_recorded() -> dict[str, tuple[str, str | None]] | None:
        now = await statuses(pool, requests)
        return now if now[first][0] == "sent" else None

    seen = await eventually(first_recorded, timeout=SAFETY, interval=0.05)
    assert not sending.done()
    assert sorted(status for status, _ in seen.values()) == ["pending", "pending", "sent"]

    email.gate.set()
    answers = await sending
    assert [a.status for a in answers if isinstance(a, SendResult)] == ["sent"] * 3
    assert await statuses(pool, requests) == {c: ("sent", None) for c in customers}
    assert len(email.delivered) == 3


class BouncingEmail(FlakyEmail):
    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        raise PermanentDeliveryError(
            f"recipient refused: {message.recipient}: 550 5.1.1 no such user",
            response={"smtp_code": 550, "smtp_message": "5.1.1 no such user"},
        )


class DownSms:
    name = "sms"

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        raise TransientDeliveryError("SMS provider answered 503")

    async def close(self) -> None:
        pass


async def test_a_bounce_then_a_transient_failure_on_the_fallback_records_the_failure_with_the_suppression(
    pool: asyncpg.Pool,
) -> None:
    sender = JourneyActivities(
        pool, {"email": BouncingEmail(), "sms": DownSms()}, make_settings(consent_default="opt_in")
    )
    customer = await make_customer(pool, phone=True, consent=("email", "sms"))
    requests = batch_of(
        [customer],
        channel=None,
        template=None,
        channels=["email", "sms"],
        content={"email": {"subject": "Sale", "text": "Sale"}, "sms": {"text": "Sale"}},
    )
    [answer] = await sender.send_batch(requests)

    assert isinstance(answer, SendResult) and answer.status == "failed"
    assert answer.reason is not None and "550 5.1.1" in answer.reason and "503" in answer.reason
    assert await statuses(pool, requests) == {customer: ("failed", answer.reason)}
    assert await suppressions.suppression_for(pool, "email", f"{customer}@example.com") == "hard_bounce"
    [again] = await sender.send_batch(requests)
    assert isinstance(again, SendResult) and again.duplicate and again.status == "failed"


async def died_delivering(pool: asyncpg.Pool, requests: list[SendRequest], settings: Any) -> GatedEmail:
    """Run the batch until its deliveries have begun, then kill it (as a worker dying would): no outcome."""
    email = GatedEmail()
    sending = asyncio.create_task(JourneyActivities(pool, {"email": email}, settings).send_batch(requests))
    await asyncio.wait_for(email.entered.wait(), SAFETY)
    sending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sending
    return email


async def test_a_batch_that_died_delivering_is_delivered_once_more_and_never_a_third_time(pool: asyncpg.Pool) -> None:
    settings = make_settings(consent_default="opt_in")
    once, twice = await make_customer(pool), await make_customer(pool)

    first = batch_of([once])
    await died_delivering(pool, first, settings)
    assert await statuses(pool, first) == {once: ("pending", None)}
    email = FlakyEmail()
    [answer] = await JourneyActivities(pool, {"email": email}, settings).send_batch(first)
    assert isinstance(answer, SendResult) and answer.status == "sent" and not answer.duplicate
    assert email.delivered == [f"{once}@example.com"]

    second = batch_of([twice])
    await died_delivering(pool, second, settings)
    await died_delivering(pool, second, settings)
    email = FlakyEmail()
    [answer] = await JourneyActivities(pool, {"email": email}, settings).send_batch(second)
    assert isinstance(answer, SendResult) and answer.status == "failed"
    assert answer.reason is not None and answer.reason.startswith("delivery_unconfirmed")
    assert email.delivered == []


async def test_a_customer_erased_while_the_batch_delivers_does_not_come_back_in_the_messages(
    pool: asyncpg.Pool,
) -> None:
    email = GatedEmail()
    sender = JourneyActivities(pool, {"email": email}, make_settings(consent_default="opt_in"))
    customer = await make_customer(pool)
    requests = batch_of([customer])
    sending = asyncio.create_task(sender.send_batch(requests))
    await asyncio.wait_for(email.entered.wait(), SAFETY)

    await asyncio.wait_for(
        privacy.erase_customer(pool, customer, b"secret", requested_at=datetime.now(UTC), complete=True), SAFETY
    )
    email.gate.set()
    await sending
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE customer_id = $1", customer) == 0
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE recipient LIKE $1", f"{customer}%") == 0
