"""The message log (store.messages): the first decision for a key stands, and what frequency caps count."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from activities.journey import JourneyActivities
from activities.models import SendFailure, SendRequest
from config.settings import Settings
from contracts.journey import Event
from store import messages as message_store

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def new_message(customer: str, **fields: object) -> message_store.NewMessage:
    message = message_store.NewMessage(
        idempotency_key=uid("k"),
        journey_id="welcome",
        journey_version=1,
        step_id="hello",
        customer_id=customer,
        entry_id=uid("entry"),
        channel="email",
        topic=None,
        kind="marketing",
        status="sent",
        reason=None,
        recipient=f"{customer}@example.com",
        rendered={"subject": "Hello"},
        provider_message_id="smtp-1",
        provider_response={"smtp_code": 250},
        error=None,
        attempts=1,
        decided_at=T0,
        choice={"order": ["email"]},
    )
    return dataclasses.replace(message, **fields)  # type: ignore[arg-type]


async def test_the_first_decision_for_a_key_stands(pool: asyncpg.Pool) -> None:
    customer = uid("c")
    sent = new_message(customer)
    assert await message_store.insert_message(pool, sent) is True
    retried = dataclasses.replace(sent, status="failed", reason="provider_rejected: 421", provider_message_id=None)
    assert await message_store.insert_message(pool, retried) is False

    assert await message_store.message_status(pool, sent.idempotency_key) == message_store.MessageStatus(
        status="sent", reason=None, channel="email", provider_message_id="smtp-1"
    )
    assert await message_store.message_status(pool, uid("unknown")) is None
    row = await pool.fetchrow("SELECT * FROM messages WHERE idempotency_key = $1", sent.idempotency_key)
    assert row is not None
    assert (row["rendered"], row["provider_response"], row["choice"]) == (
        {"subject": "Hello"},
        {"smtp_code": 250},
        {"order": ["email"]},
    )
    assert row["sent_at"] is not None and row["decided_at"] == T0


async def test_only_a_sent_message_gets_a_sent_time(pool: asyncpg.Pool) -> None:
    skipped = new_message(uid("c"), status="skipped", reason="no_consent:email", provider_message_id=None)
    await message_store.insert_message(pool, skipped)
    row = await pool.fetchrow(
        "SELECT status, sent_at FROM messages WHERE idempotency_key = $1", skipped.idempotency_key
    )
    assert row is not None and (row["status"], row["sent_at"]) == ("skipped", None)


async def test_frequency_caps_count_sent_marketing_decided_after_the_window_start(pool: asyncpg.Pool) -> None:
    customer = uid("c")
    counted = [
        new_message(customer, decided_at=T0 - timedelta(hours=1)),
        new_message(customer, channel="sms", decided_at=T0 - timedelta(minutes=1)),
    ]
    ignored = [
        new_message(customer, decided_at=T0 - timedelta(days=2)),  # before the window
        new_message(customer, kind="transactional"),
        new_message(customer, status="skipped", reason="quiet_hours"),
        new_message(customer, status="failed", reason="provider_rejected: 550"),
        new_message(uid("someone-else")),
    ]
    for message in counted + ignored:
        await message_store.insert_message(pool, message)

    sent = await message_store.marketing_sent_since(pool, customer, T0 - timedelta(days=1))
    assert sorted(sent) == [("email", T0 - timedelta(hours=1)), ("sms", T0 - timedelta(minutes=1))]


async def test_recent_messages_are_the_newest_first(pool: asyncpg.Pool) -> None:
    customer = uid("c")
    for step in ("first", "second", "third"):
        await message_store.insert_message(pool, new_message(customer, step_id=step))
    recent = await message_store.recent_messages(pool, customer, limit=2)
    assert [m.step_id for m in recent] == ["third", "second"]
    assert recent[0].rendered == {"subject": "Hello"}


def send_request(customer: str) -> SendRequest:
    return SendRequest(
        idempotency_key=uid("k"),
        journey_id="welcome",
        journey_name="Welcome",
        journey_version=1,
        step_id="hello",
        customer_id=customer,
        entry_id=uid("entry"),
        channel="email",
        template={"subject": "Hi"},
        trigger=Event(event_id=uid("e"), customer_id=customer, name="signed_up", occurred_at=T0),
        now=T0,
    )


async def test_a_send_whose_retries_ran_out_is_logged_failed_unless_it_was_decided(pool: asyncpg.Pool) -> None:
    activities = JourneyActivities(pool, {}, Settings())
    request = send_request(uid("c"))
    failed = await activities.record_send_failure(SendFailure(request=request, reason="activity_timeout"))
    assert (failed.status, failed.reason, failed.channel) == ("failed", "activity_timeout", "email")
    row = await pool.fetchrow(
        "SELECT error, attempts FROM messages WHERE idempotency_key = $1", request.idempotency_key
    )
    assert row is not None and (row["error"], row["attempts"]) == ("activity_timeout", 1)

    # A send that was recorded before its activity gave up keeps its record.
    decided = send_request(uid("c"))
    await message_store.insert_message(
        pool, new_message(decided.customer_id, idempotency_key=decided.idempotency_key, status="sent")
    )
    answer = await activities.record_send_failure(SendFailure(request=decided, reason="activity_timeout"))
    assert (answer.status, answer.reason) == ("sent", None)
