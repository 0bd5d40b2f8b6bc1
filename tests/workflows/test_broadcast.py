"""The broadcast workflow on the time-skipping server with the real worker, PostgreSQL and SMTP sink.

Every test tags its customers with a unique attribute and segments on it, so the shared database's other
customers never enter its audience.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from contracts.broadcast import BroadcastResult
from journeys.broadcasts import Broadcast, broadcast_journey_id
from orchestration.broadcasts import control, start_broadcast
from store import broadcasts as broadcast_store
from store import segments as segment_store
from tests.support.engine import Engine, journey_from, running_engine, save_history, set_consent, where_tag
from tests.support.faults import SlowSmtpSink, wait_until
from tests.support.mail import SmtpSink

pytestmark = pytest.mark.timeout(180)


async def customer(
    pool: asyncpg.Pool,
    tag: str,
    *,
    timezone: str = "Europe/Paris",
    email: bool = True,
    consent: str | None = "granted",
    attributes: dict[str, Any] | None = None,
    name: str = "Ada",
) -> str:
    customer_id = f"bc-{uuid.uuid4().hex[:12]}"
    await pool.execute(
        "INSERT INTO customers (id, email, timezone, attributes) VALUES ($1, $2, $3, $4)",
        customer_id,
        f"{customer_id}@example.com" if email else None,
        timezone,
        {"tag": tag, "first_name": name, **(attributes or {})},
    )
    if consent is not None:
        await set_consent(pool, customer_id, "channel", "email", consent)
    return customer_id


def broadcast(tag: str, **fields: Any) -> Broadcast:
    return Broadcast.model_validate(
        {
            "id": f"b-{uuid.uuid4().hex[:10]}",
            "name": "Winter sale",
            "segment": where_tag(tag),
            "channel": "email",
            "template": {"subject": "Sale for {{ customer.first_name }}", "text": "Hi {{ customer.first_name }}"},
            "topic": "promotions",
            **fields,
        }
    )


async def run(engine: Engine, b: Broadcast, *, history: str | None = None) -> BroadcastResult:
    assert await broadcast_store.create_broadcast(engine.pool, b) is not None
    handle = await start_broadcast(engine.client, b, task_queue=engine.settings.task_queue)
    assert handle is not None
    result: BroadcastResult = await handle.result()
    if history is not None:
        await save_history(handle, history)  # the replay corpus (tests/test_replay.py)
    return result


async def messages(pool: asyncpg.Pool, b: Broadcast) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch("SELECT * FROM messages WHERE journey_id = $1", broadcast_journey_id(b.id))
    return {r["customer_id"]: r for r in rows}


async def test_mixed_segment_gets_exactly_what_the_policy_allows_at_each_local_time(engine: Engine) -> None:
    pool, tag = engine.pool, uuid.uuid4().hex
    paris = await customer(pool, tag, name="Paul")
    new_york = await customer(pool, tag, timezone="America/New_York", name="Nora")
    withdrawn = await customer(pool, tag, consent="withdrawn")
    suppressed = await customer(pool, tag)
    await pool.execute(
        "INSERT INTO suppressions (channel, address, reason, source) VALUES ('email', $1, 'manual', 'test')",
        f"{suppressed}@example.com",
    )
    capped = await customer(pool, tag, attributes={"frequency_cap": {"limit": 1, "per": "30d"}})
    quiet = await customer(pool, tag, attributes={"quiet_hours": "09:00-12:00"})
    no_address = await customer(pool, tag, email=False)
    outsider = await customer(pool, uuid.uuid4().hex)  # not in the segment

    day = (await engine.env.get_current_time() + timedelta(days=2)).date()  # the server's clock may be ahead
    b = broadcast(tag, send_at={"local": f"{day.isoformat()}T10:00"})
    # The capped customer had a marketing email from a journey just before the broadcast goes out.
    paris_ten = datetime(day.year, day.month, day.day, 10, tzinfo=ZoneInfo("Europe/Paris"))
    await pool.execute(
        """INSERT INTO messages (idempotency_key, journey_id, journey_version, step_id, customer_id, entry_id,
                                 channel, kind, status, decided_at)
           VALUES ($1, 'some-journey', 1, 's', $2, 'e', 'email', 'marketing', 'sent', $3)""",
        f"k-{uuid.uuid4().hex}",
        capped,
        paris_ten - timedelta(hours=1),
    )

    result = await run(engine, b, history="broadcast-local-time-lanes")

    assert result.status == "completed" and result.audience == 7
    rows = await messages(pool, b)
    assert outsider not in rows
    assert {c: (r["status"], r["reason"]) for c, r in rows.items()} == {
        paris: ("sent", None),
        new_york: ("sent", None),
        quiet: ("sent", None),
        withdrawn: ("skipped", "consent_withdrawn:email"),
        suppressed: ("skipped", "suppressed:manual"),
        capped: ("skipped", "frequency_cap: customer's cap: 1 per 30d"),
        no_address: ("skipped", "unreachable:email"),
    }

    def local(customer_id: str, zone: str) -> tuple[int, int]:
        at = rows[customer_id]["decided_at"].astimezone(ZoneInfo(zone))
        assert at.date() == day
        return at.hour, at.minute

    assert local(paris, "Europe/Paris") == (10, 0)
    assert local(new_york, "America/New_York") == (10, 0)
    assert local(quiet, "Europe/Paris") == (12, 0)  # held back until its quiet hours ended

    received = {rcpt for m in engine.smtp.messages for rcpt in m.rcpt_tos}
    assert received & {f"{c}@example.com" for c in rows} == {f"{c}@example.com" for c in (paris, new_york, quiet)}
    assert sum(1 for m in engine.smtp.messages if f"{paris}@example.com" in m.rcpt_tos) == 1
    [mail] = engine.mail_to(paris)
    assert mail["Subject"] == "Sale for Paul"
    progress = await broadcast_store.progress(pool, b.id)
    assert progress.counts == {"sent": 3, "skipped": 4}
    row = await broadcast_store.get_broadcast(pool, b.id)
    assert row is not None and row.status == "completed"


async def test_a_saved_segment_is_frozen_at_start_and_the_report_counts_conversions_and_holdout(
    engine: Engine,
) -> None:
    from journeys.models import Audience

    pool, tag = engine.pool, uuid.uuid4().hex
    members = [await customer(pool, tag) for _ in range(20)]
    segment_id = f"seg-{uuid.uuid4().hex[:8]}"
    await segment_store.put_segment(pool, segment_id, Audience.model_validate(where_tag(tag)))
    b = broadcast(tag, segment={"ref": segment_id}, holdout={"percent": 30}, goal={"event": "order_placed"})
    result = await run(engine, b)
    # Changing the segment afterwards changes nothing for this broadcast.
    await segment_store.put_segment(pool, segment_id, Audience())
    row = await broadcast_store.get_broadcast(pool, b.id)
    assert row is not None and row.audience == 20 and row.segment is not None
    assert row.segment["where"] == {"all": [{"field": "profile.tag", "op": "eq", "value": tag}]}
    progress = await broadcast_store.progress(pool, b.id)
    held = progress.counts.get("holdout", 0)
    assert progress.counts.get("sent", 0) + held == 20 and 0 < held < 20
    assert result.counts.sent == 20 - held
    rows = await messages(pool, b)
    sent = sorted(c for c, r in rows.items() if r["status"] == "sent")
    holdout = sorted(set(members) - set(sent))
    assert len(sent) == 20 - held and len(rows) == len(sent)  # the holdout received nothing

    # One recipient orders an hour after the message, another a month later (outside the 7-day window), and one
    # of the holdout orders within the window of the audience's freezing (all on the broadcast's clock).
    sent_at = rows[sent[0]]["decided_at"]
    for customer_id, at in ((sent[0], sent_at + timedelta(hours=1)), (sent[1], sent_at + timedelta(days=30))):
        await pool.execute(
            "INSERT INTO events (event_id, customer_id, name, occurred_at) VALUES ($1, $2, 'order_placed', $3)",
            f"ev-{uuid.uuid4().hex}",
            customer_id,
            at,
        )
    assert row.frozen_at is not None
    await pool.execute(
        "INSERT INTO events (event_id, customer_id, name, occurred_at) VALUES ($1, $2, 'order_placed', $3)",
        f"ev-{uuid.uuid4().hex}",
        holdout[0],
        row.frozen_at + timedelta(days=1),
    )
    report = await broadcast_store.report(pool, row)
    assert (report.sent, report.converted, report.holdout, report.holdout_converted) == (len(sent), 1, held, 1)


async def test_a_rate_limit_of_one_a_second_sends_one_message_each_second(engine: Engine) -> None:
    """Two batches run at once, each with its share of the page of due recipients: together they keep to the
    rate limit (one a second here, one message a round)."""
    tag = uuid.uuid4().hex
    ids = [await customer(engine.pool, tag) for _ in range(4)]
    b = broadcast(tag, rate_limit=1)
    result = await run(engine, b)
    assert result.counts.sent == len(ids)
    decided = sorted(r["decided_at"] for r in (await messages(engine.pool, b)).values())
    gaps = [later - earlier for earlier, later in itertools.pairwise(decided)]
    assert all(gap >= timedelta(seconds=1) for gap in gaps), gaps


async def test_a_rate_limit_spreads_the_sends_over_time(engine: Engine) -> None:
    """10 recipients at 4 per second: never more than 4 at one instant, and each instant is followed by a pause of
    at least its sends / 4 seconds on the broadcast's clock (the lanes of a round may send fewer than 4 when the
    page's customers fall unevenly into them, never more), so the 10 take at least 1.5 s of it; without a rate
    limit the same audience goes in one batch, at one instant."""
    pool = engine.pool
    tag = uuid.uuid4().hex
    for _ in range(10):
        await customer(pool, tag)
    limited = broadcast(tag, rate_limit=4)
    result = await run(engine, limited)
    assert result.counts.sent == 10
    per_instant = sorted(Counter(r["decided_at"] for r in (await messages(pool, limited)).values()).items())
    assert sum(n for _, n in per_instant) == 10 and max(n for _, n in per_instant) <= 4, per_instant
    for (earlier, sent), (later, _) in itertools.pairwise(per_instant):
        assert later - earlier >= timedelta(seconds=sent / 4), per_instant
    assert per_instant[-1][0] - per_instant[0][0] >= timedelta(seconds=1.5)

    unlimited = broadcast(tag)
    assert (await run(engine, unlimited)).counts.sent == 10
    assert len({r["decided_at"] for r in (await messages(pool, unlimited)).values()}) == 1


async def test_a_broadcast_scheduled_for_an_instant_sends_nobody_before_it(engine: Engine) -> None:
    """``send_at`` as an instant: the broadcast waits on the server's clock (skipped ahead here) and every message
    is decided at that instant or after, in every time zone alike."""
    pool, tag = engine.pool, uuid.uuid4().hex
    ids = {await customer(pool, tag), await customer(pool, tag, timezone="America/New_York")}
    at = (await engine.env.get_current_time() + timedelta(days=3)).replace(microsecond=0)
    b = broadcast(tag, send_at=at.isoformat())
    assert (await run(engine, b)).counts.sent == 2
    decided = {r["customer_id"]: r["decided_at"] for r in (await messages(pool, b)).values()}
    assert set(decided) == ids
    assert all(at <= moment < at + timedelta(hours=1) for moment in decided.values()), (at, decided)


async def test_a_broadcast_message_counts_against_a_journeys_frequency_cap(engine: Engine) -> None:
    """Caps hold across broadcasts and journeys both ways: a customer capped at one marketing email who got the
    broadcast is skipped by a journey's marketing email afterwards; an uncapped one gets both. (The cap's period is
    a century: the shared time-skipping server may leap to another test's far timer between the two sends.)"""
    pool, tag = engine.pool, uuid.uuid4().hex
    capped = await customer(pool, tag, attributes={"frequency_cap": {"limit": 1, "per": "36500d"}})
    free = await customer(pool, tag)
    b = broadcast(tag)
    assert (await run(engine, b)).counts.sent == 2

    journey = journey_from(
        {
            "id": f"cap-{tag[:8]}",
            "name": "After the sale",
            "trigger": {"event": f"go-{tag[:8]}"},
            "steps": [
                {"id": "follow-up", "type": "send", "channel": "email", "topic": "promotions",
                 "template": {"subject": "Still interested?", "text": "Hi"}},
            ],
        }
    )  # fmt: skip
    for customer_id in (capped, free):
        await (await engine.enter(journey, customer_id)).result()
    rows = await pool.fetch("SELECT customer_id, status, reason FROM messages WHERE journey_id = $1", journey.id)
    outcome = {r["customer_id"]: (r["status"], (r["reason"] or "").split(":")[0]) for r in rows}
    assert outcome == {capped: ("skipped", "frequency_cap"), free: ("sent", "")}


async def test_a_long_broadcast_continues_as_new_and_still_sends_everyone_once(engine: Engine) -> None:
    """A broadcast of more batches than one run holds (``BATCHES_PER_RUN``: batches of one, here) continues as a
    new run carrying its counts: every recipient gets one email and the result counts them all."""
    from workflows.broadcast import BATCHES_PER_RUN

    pool, tag = engine.pool, uuid.uuid4().hex
    recipients = BATCHES_PER_RUN + 5
    ids = {await customer(pool, tag) for _ in range(recipients)}
    b = broadcast(tag, batch_size=1)
    assert await broadcast_store.create_broadcast(pool, b) is not None
    handle = await start_broadcast(engine.client, b, task_queue=engine.settings.task_queue)
    assert handle is not None
    result: BroadcastResult = await handle.result()
    assert result.status == "completed" and result.audience == recipients and result.counts.sent == recipients

    first_run = engine.client.get_workflow_handle(handle.id, run_id=handle.result_run_id or handle.run_id)
    last_event = (await first_run.fetch_history()).events[-1]
    assert last_event.HasField("workflow_execution_continued_as_new_event_attributes")
    received = Counter(rcpt for m in engine.smtp.messages for rcpt in m.rcpt_tos if rcpt.split("@")[0] in ids)
    assert set(received) == {f"{c}@example.com" for c in ids} and set(received.values()) == {1}
    assert (await broadcast_store.progress(pool, b.id)).counts == {"sent": recipients}


async def test_pause_and_cancel_stop_sending_within_a_batch(time_skipping_env: Any, pool: asyncpg.Pool) -> None:
    sink = SlowSmtpSink(delay=0.05)
    await sink.start()
    try:
        async with running_engine(time_skipping_env, pool, sink) as engine:
            tag = uuid.uuid4().hex
            ids = [await customer(pool, tag) for _ in range(120)]
            b = broadcast(tag, batch_size=120)  # one batch: stopping must happen inside it
            assert await broadcast_store.create_broadcast(pool, b) is not None
            handle = await start_broadcast(engine.client, b, task_queue=engine.settings.task_queue)
            assert handle is not None
            await sink.wait_for(1, timeout=30)
            assert await control(pool, engine.client, b.id, "pause") == "paused"

            async def settled() -> int | None:
                first = len(sink.messages)
                await asyncio.sleep(1.0)
                return first if len(sink.messages) == first else None

            paused_at = await wait_until(settled, timeout=30, what="sending stopped after pause")
            assert 0 < paused_at < len(ids)

            assert await control(pool, engine.client, b.id, "resume") == "sending"
            await sink.wait_for(paused_at + 1, timeout=30)
            assert await control(pool, engine.client, b.id, "cancel") == "cancelled"
            result = await handle.result()
            assert result.status == "cancelled"
            await asyncio.sleep(0.5)
            delivered = len(sink.messages)
            assert paused_at < delivered < len(ids)
            progress = await broadcast_store.progress(pool, b.id)
            assert progress.counts["sent"] == delivered
            assert progress.counts["cancelled"] == len(ids) - delivered
            counts: dict[str, int] = {}
            for m in sink.messages:
                for rcpt in m.rcpt_tos:
                    counts[rcpt] = counts.get(rcpt, 0) + 1
            assert set(counts.values()) == {1}
    finally:
        await sink.stop()


class RefusingOnceSink(SmtpSink):
    """The SMTP sink, deferring each recipient's first RCPT with a 451 that quotes the address (as servers do)."""

    def __init__(self) -> None:
        super().__init__()
        self.deferred: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address not in self.deferred:
            self.deferred.add(address)
            return f"451 4.2.0 <{address}>: mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.mark.devserver
async def test_a_broadcast_runs_history_holds_no_recipient_even_when_a_batch_failed(
    dev_env: Any, pool: asyncpg.Pool
) -> None:
    """Erasing a customer deletes their own runs' histories, not a broadcast's: so a broadcast run's history must
    never hold a recipient's id or address. The run carries the broadcast id and counts (the audience is in
    ``broadcast_recipients``, which erasure covers); a failed batch is recorded without the error's text."""
    sink = RefusingOnceSink()
    await sink.start()
    try:
        async with running_engine(dev_env, pool, sink) as engine:
            tag = uuid.uuid4().hex
            ids = [await customer(pool, tag) for _ in range(3)]
            b = broadcast(tag)
            assert await broadcast_store.create_broadcast(pool, b) is not None
            handle = await start_broadcast(engine.client, b, task_queue=engine.settings.task_queue)
            assert handle is not None
            result = await handle.result()
            assert result.counts.sent == 3 and sink.deferred == {f"{c}@example.com" for c in ids}
            history = (await handle.fetch_history()).to_json()
    finally:
        await sink.stop()
    assert "batch failed" in history  # the failed attempt is in the history...
    for customer_id in ids:
        assert customer_id not in history  # ...but no recipient, in any payload or failure
