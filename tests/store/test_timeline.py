"""A customer's timeline (store.timeline): events, messages and step outcomes merged newest first, paged by a
keyset cursor that loses and repeats nothing, even when a page ends inside one instant."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from store import timeline as timeline_store

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def _history(pool: asyncpg.Pool, customer: str) -> None:
    """An event, the message it caused, the step that sent it; then three events at one same instant; and a
    superseded step outcome that must not show."""
    entry = f"ev-{customer}"
    await pool.execute(
        "INSERT INTO events (event_id, customer_id, name, occurred_at) VALUES ($1, $2, 'signed_up', $3)",
        entry, customer, T0,
    )  # fmt: skip
    await pool.execute(
        """INSERT INTO messages (idempotency_key, journey_id, journey_version, step_id, customer_id, entry_id,
                                 channel, kind, status, created_at, choice)
           VALUES ($1, 'welcome', 2, 'hello', $2, $3, 'email', 'marketing', 'sent', $4, $5)""",
        f"k-{customer}", customer, entry, T0 + timedelta(seconds=1), {"why": "step order"},
    )  # fmt: skip
    for superseded in (T0, None):
        await pool.execute(
            """INSERT INTO step_outcomes (journey_id, journey_version, customer_id, entry_id, step_id, step_type,
                                          outcome, workflow_id, run_id, recorded_at, superseded_at)
               VALUES ('welcome', 2, $1, $2, 'hello', 'send', 'sent', 'wf', $3, $4, $5)""",
            customer, entry, "old" if superseded else "new", T0 + timedelta(seconds=2), superseded,
        )  # fmt: skip
    same = T0 + timedelta(seconds=3)
    for n in range(3):
        await pool.execute(
            "INSERT INTO events (event_id, customer_id, name, occurred_at) VALUES ($1, $2, 'viewed', $3)",
            f"same-{n}-{customer}", customer, same,
        )  # fmt: skip
    other = f"other-{uuid.uuid4().hex}"
    await pool.execute(
        "INSERT INTO events (event_id, customer_id, name, occurred_at) VALUES ($1, $2, 'signed_up', $3)",
        f"ev-{other}", other, T0,
    )  # fmt: skip


async def test_newest_first_with_the_message_and_step_of_an_event(pool: asyncpg.Pool) -> None:
    customer = f"cust-{uuid.uuid4().hex}"
    await _history(pool, customer)
    entries = await timeline_store.timeline(pool, customer, limit=50)
    assert [e.kind for e in entries] == ["event", "event", "event", "step", "message", "event"]
    step, message, event = entries[3:]
    assert event.name == "signed_up" and event.entry_id == f"ev-{customer}"
    assert (message.name, message.journey_id, message.journey_version, message.step_id) == (
        "email",
        "welcome",
        2,
        "hello",
    )
    assert message.entry_id == event.entry_id and message.detail == {"why": "step order"}
    assert (step.step_id, step.status, step.entry_id) == ("hello", "sent", event.entry_id)


async def test_pages_of_one_lose_and_repeat_nothing_inside_one_instant(pool: asyncpg.Pool) -> None:
    customer = f"cust-{uuid.uuid4().hex}"
    await _history(pool, customer)
    everything = await timeline_store.timeline(pool, customer, limit=50)
    paged: list[timeline_store.Entry] = []
    before = None
    while page := await timeline_store.timeline(pool, customer, limit=1, before=before):
        paged.extend(page)
        before = (page[-1].at, page[-1].key)
    assert [e.key for e in paged] == [e.key for e in everything]
    assert len({e.key for e in paged}) == 6
