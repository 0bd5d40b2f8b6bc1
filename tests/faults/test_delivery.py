"""Providers that fail, a consent change racing a send, and the same batch posted twice at once.

These run on the shared stack (dev server, session PostgreSQL, an in-process worker, the API over ASGI).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from contracts.journey import EVENT_SIGNAL
from tests.support.faults import SlowSmtpSink, mail_counts, wait_until
from tests.support.mail import SmtpSink
from tests.support.stack import Stack
from tests.support.webhooks import WebhookSink

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


async def _post(stack: Stack, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await stack.http.post("/v1/events", json={"events": events})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def _event(customer_id: str, name: str, event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id or f"ev-{uuid.uuid4().hex}", "customer_id": customer_id, "name": name}


async def _messages(stack: Stack, journey_id: str) -> list[Any]:
    return await stack.pool.fetch("SELECT * FROM messages WHERE journey_id = $1 ORDER BY customer_id", journey_id)


async def _publish(stack: Stack, definition: dict[str, Any]) -> None:
    response = await stack.http.post("/v1/journeys", json=definition)
    assert response.status_code in (200, 201), response.text
    await stack.router.refresh()


async def _rows(stack: Stack, journey_id: str, n: int, timeout: float = 60) -> list[Any]:  # noqa: ASYNC109
    async def check() -> list[Any] | None:
        rows = await _messages(stack, journey_id)
        return rows if len(rows) >= n else None

    rows: list[Any] = await wait_until(check, timeout=timeout, what=f"{n} message rows")
    return rows


async def test_smtp_4xx_for_a_while_is_retried_and_delivered_once(stack: Stack) -> None:
    journey = stack.journey()
    await _publish(stack, journey)
    customers = [await stack.customer() for _ in range(3)]
    stack.smtp.fail(451, times=6)  # the first six DATA answers are 451: every customer is refused at least once
    await _post(stack, [_event(c, journey["trigger"]["event"]) for c in customers])

    rows = await _rows(stack, journey["id"], 3, timeout=60)
    assert [r["status"] for r in rows] == ["sent"] * 3
    await asyncio.sleep(1)
    counts = mail_counts(stack.smtp.messages)
    refused = mail_counts(stack.smtp.refused)
    assert all(counts[f"{c}@example.com"] == 1 for c in customers), counts
    assert sum(refused[f"{c}@example.com"] for c in customers) == 6
    attempts = {r["customer_id"]: r["attempts"] for r in rows}
    assert all(attempts[c] == refused[f"{c}@example.com"] + 1 for c in customers), (attempts, refused)
    print(f"\n451 x6 over 3 customers: attempts {sorted(attempts.values())}, delivered once each")


async def test_smtp_5xx_is_recorded_as_failed_and_not_retried(stack: Stack) -> None:
    journey = stack.journey()
    await _publish(stack, journey)
    customer = await stack.customer()
    stack.smtp.fail(550, times=None)
    await _post(stack, [_event(customer, journey["trigger"]["event"])])

    [row] = await _rows(stack, journey["id"], 1)
    await asyncio.sleep(2)
    assert row["status"] == "failed"
    assert row["reason"].startswith("provider_rejected"), row["reason"]
    assert row["attempts"] == 1
    assert mail_counts(stack.smtp.refused)[f"{customer}@example.com"] == 1  # not retried
    assert not stack.smtp.messages
    # Channel fallback (the next channel of the step) is being built: only the failed record is asserted here.


@pytest_asyncio.fixture
async def webhook(webhook_sink: WebhookSink) -> WebhookSink:
    return webhook_sink


def _webhook_journey(stack: Stack, url: str) -> dict[str, Any]:
    return stack.journey(
        steps=[
            {
                "id": "notify",
                "type": "send",
                "channel": "webhook",
                "kind": "transactional",
                "template": {"url": url, "payload": {"hello": "{{ customer.id }}"}},
            }
        ]
    )


async def test_webhook_500_then_200_is_delivered_once(stack: Stack, webhook: WebhookSink) -> None:
    journey = _webhook_journey(stack, webhook.url)
    await _publish(stack, journey)
    customer = await stack.customer()
    webhook.enqueue(500, 200)
    await _post(stack, [_event(customer, journey["trigger"]["event"])])

    [row] = await _rows(stack, journey["id"], 1)
    await asyncio.sleep(1.5)
    assert row["status"] == "sent"
    assert row["attempts"] == 2
    assert len(webhook.requests) == 2
    assert {r.headers["webhook-id"] for r in webhook.requests} == {row["idempotency_key"]}


async def test_webhook_400_is_not_retried_and_recorded(stack: Stack, webhook: WebhookSink) -> None:
    journey = _webhook_journey(stack, webhook.url)
    await _publish(stack, journey)
    customer = await stack.customer()
    webhook.set_default(400)
    await _post(stack, [_event(customer, journey["trigger"]["event"])])

    [row] = await _rows(stack, journey["id"], 1)
    await asyncio.sleep(2)
    assert row["status"] == "failed"
    assert "400" in row["reason"]
    assert len(webhook.requests) == 1


@pytest_asyncio.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    """Overrides the shared sink in this module: DATA is answered after 400 ms, which widens the race."""
    sink = SlowSmtpSink(delay=0.4)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


async def test_unsubscribe_while_send_in_flight_is_before_or_skipped_never_after(stack: Stack) -> None:
    assert isinstance(stack.smtp, SlowSmtpSink)
    journey = stack.journey()
    await _publish(stack, journey)
    customers = [await stack.customer() for _ in range(24)]
    rng = random.Random(6)
    put_at: dict[str, float] = {}

    async def race(customer: str) -> None:
        await _post(stack, [_event(customer, journey["trigger"]["event"])])
        await asyncio.sleep(rng.uniform(0.0, 1.2))
        put_at[customer] = time.time()
        response = await stack.http.put(f"/v1/customers/{customer}/consent", json={"channels": {"email": "withdrawn"}})
        assert response.status_code == 200, response.text

    await asyncio.gather(*(race(c) for c in customers))
    rows = {r["customer_id"]: r for r in await _rows(stack, journey["id"], len(customers), timeout=60)}
    withdrawn = {
        r["customer_id"]: r["recorded_at"]
        for r in await stack.pool.fetch(
            "SELECT customer_id, recorded_at FROM consent_events "
            "WHERE customer_id = ANY($1::text[]) AND name = 'email' AND status = 'withdrawn'",
            customers,
        )
    }
    counts = mail_counts(stack.smtp.messages)
    outcome: Counter[str] = Counter()
    in_window = 0
    for c in customers:
        row, recorded = rows[c], withdrawn[c]
        email = f"{c}@example.com"
        if row["status"] == "sent":
            assert row["sent_at"] < recorded, (c, row["sent_at"], recorded)
            assert counts[email] == 1
            started = stack.smtp.data_started.get(email)
            if started is not None and started <= put_at[c]:
                in_window += 1  # the withdrawal was asked for while the SMTP server held the message
            outcome["sent before the withdrawal"] += 1
        else:
            assert row["status"] == "skipped" and row["reason"] == "consent_withdrawn:email", dict(row)
            assert counts[email] == 0
            outcome["skipped"] += 1
    print(f"\n{dict(outcome)}; withdrawals requested during DATA: {in_window}")
    assert outcome["skipped"] > 0 and outcome["sent before the withdrawal"] > 0, outcome


async def test_same_batch_posted_twice_concurrently_is_routed_once(stack: Stack) -> None:
    journey = stack.journey()
    await _publish(stack, journey)
    customers = [await stack.customer() for _ in range(20)]
    triggers = [_event(c, journey["trigger"]["event"]) for c in customers]
    first, second = await asyncio.gather(_post(stack, triggers), _post(stack, triggers))
    await _rows(stack, journey["id"], len(customers))
    dones = [_event(c, f"done-{journey['id'].removeprefix('j-')}") for c in customers]
    third, fourth = await asyncio.gather(_post(stack, dones), _post(stack, dones))

    for a, b in ((first, second), (third, fourth)):
        for ra, rb in zip(a["results"], b["results"], strict=True):
            assert sorted([ra["status"], rb["status"]]) == ["accepted", "duplicate"], (ra, rb)
    ids = [e["event_id"] for e in triggers + dones]
    stored = await stack.pool.fetch("SELECT event_id, routed_at FROM events WHERE event_id = ANY($1::text[])", ids)
    assert len(stored) == len(ids) and all(r["routed_at"] is not None for r in stored)

    for customer in customers:
        handle = stack.client.get_workflow_handle(f"{journey['id']}:{customer}")
        await asyncio.wait_for(handle.result(), 30)
        history = await handle.fetch_history()
        started = [e for e in history.events if e.HasField("workflow_execution_started_event_attributes")]
        signals = [e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")]
        assert len(started) == 1
        # The trigger is the run's input; the done event, posted twice, reached it once.
        assert [s.workflow_execution_signaled_event_attributes.signal_name for s in signals] == [EVENT_SIGNAL]
        runs = [w async for w in stack.client.list_workflows(f"WorkflowId = '{handle.id}'")]
        assert len(runs) == 1, runs
    assert all(mail_counts(stack.smtp.messages)[f"{c}@example.com"] == 1 for c in customers)
