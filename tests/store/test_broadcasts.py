"""store/broadcasts.py on the embedded PostgreSQL: freezing an audience, local send times, settling batches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from journeys.broadcasts import Broadcast
from journeys.models import Audience
from store import broadcasts as store
from tests.support.engine import where_tag


async def _customers(pool: asyncpg.Pool, tag: str, zones: list[str | None]) -> list[str]:
    ids = []
    for zone in zones:
        customer_id = f"sb-{uuid.uuid4().hex[:10]}"
        await pool.execute(
            "INSERT INTO customers (id, email, timezone, attributes) VALUES ($1, $2, $3, $4)",
            customer_id,
            f"{customer_id}@example.com",
            zone,
            {"tag": tag},
        )
        ids.append(customer_id)
    return ids


def _broadcast(tag: str) -> Broadcast:
    return Broadcast.model_validate(
        {
            "id": f"sb-{uuid.uuid4().hex[:10]}",
            "segment": where_tag(tag),
            "channel": "email",
            "template": {"subject": "s", "text": "t"},
        }
    )


async def test_freeze_once_with_each_customers_local_time(pool: asyncpg.Pool) -> None:
    tag = uuid.uuid4().hex
    paris, tokyo, nowhere, unset = await _customers(pool, tag, ["Europe/Paris", "Asia/Tokyo", "Mars/Olympus", None])
    b = _broadcast(tag)
    assert await store.create_broadcast(pool, b) is not None
    assert await store.create_broadcast(pool, b) is None  # the id is taken
    audience = Audience.model_validate(b.segment.model_dump(exclude={"ref"}))
    local = datetime(2030, 6, 1, 10, 0)
    now = datetime(2030, 5, 1, tzinfo=UTC)
    count = await store.freeze_audience(
        pool,
        b.id,
        audience,
        now,
        send_at=None,
        local_send_at=local,
        default_timezone="America/New_York",
        holdout_percent=None,
    )
    assert count == 4
    due = {
        r["customer_id"]: r["due_at"]
        for r in await pool.fetch("SELECT customer_id, due_at FROM broadcast_recipients WHERE broadcast_id = $1", b.id)
    }
    assert due[paris] == local.replace(tzinfo=ZoneInfo("Europe/Paris"))
    assert due[tokyo] == local.replace(tzinfo=ZoneInfo("Asia/Tokyo"))
    # An unknown zone or none: the default zone.
    assert due[nowhere] == due[unset] == local.replace(tzinfo=ZoneInfo("America/New_York"))

    # A new member after the freeze changes nothing: the audience is frozen.
    await _customers(pool, tag, ["Europe/Paris"])
    again = await store.freeze_audience(
        pool, b.id, audience, now, send_at=None, local_send_at=local, default_timezone="UTC", holdout_percent=None
    )
    assert again == 4
    row = await store.get_broadcast(pool, b.id)
    assert row is not None and row.status == "sending" and row.audience == 4

    # Due pages in time order; a deferred result moves its due time, a settled one leaves the page.
    first = await store.due_page(pool, b.id, local.replace(tzinfo=ZoneInfo("Europe/Paris")), limit=10)
    assert first == [tokyo, paris]
    later = now + timedelta(days=40)
    await store.record_results(
        pool,
        b.id,
        [
            store.RecipientResult(tokyo, "sent", None, "email"),
            store.RecipientResult(paris, "pending", "quiet_hours", "email", later),
        ],
        now,
    )
    assert await store.next_due(pool, b.id) == local.replace(tzinfo=ZoneInfo("America/New_York"))
    progress = await store.progress(pool, b.id)
    assert progress.counts == {"sent": 1, "pending": 3} and progress.done == 1

    # Pause, resume, cancel; a final status stays.
    assert await store.set_status(pool, b.id, "paused", allowed_from=("sending",)) == "paused"
    assert await store.set_status(pool, b.id, "paused", allowed_from=("sending",)) == "paused"
    assert await store.set_status(pool, b.id, "cancelled", allowed_from=("paused",)) == "cancelled"
    assert await store.set_status(pool, b.id, "sending", allowed_from=("paused",)) == "cancelled"
    assert await store.cancel_pending(pool, b.id) == 3
    assert await store.set_status(pool, "nope-" + tag, "paused", allowed_from=("sending",)) is None


async def test_the_report_splits_sends_engagement_and_conversions_by_channel(pool: asyncpg.Pool) -> None:
    tag = uuid.uuid4().hex
    by_email, by_sms, failed = await _customers(pool, tag, ["Europe/Paris"] * 3)
    b = Broadcast.model_validate(
        {
            "id": f"sb-{uuid.uuid4().hex[:10]}",
            "segment": where_tag(tag),
            "channels": ["email", "sms"],
            "content": {"email": {"subject": "s", "text": "t"}, "sms": {"text": "t"}},
            "goal": {"event": "order_placed", "within": "7d"},
        }
    )
    await store.create_broadcast(pool, b)
    now = datetime(2030, 5, 1, tzinfo=UTC)
    audience = Audience.model_validate(b.segment.model_dump(exclude={"ref"}))
    await store.freeze_audience(
        pool, b.id, audience, now, send_at=None, local_send_at=None, default_timezone="UTC", holdout_percent=None
    )
    outcomes = [(by_email, "email", "sent"), (by_sms, "sms", "sent"), (failed, "sms", "failed")]
    for customer_id, channel, status in outcomes:
        await pool.execute(
            """INSERT INTO messages (idempotency_key, journey_id, journey_version, step_id, customer_id, entry_id,
                                     channel, kind, status, decided_at, first_clicked_at, clicks)
               VALUES ($1, $2, 0, 'broadcast', $3, $4, $5, 'marketing', $6, $7, $8, $9)""",
            f"broadcast:{b.id}:{customer_id}",
            f"broadcast:{b.id}",
            customer_id,
            b.id,
            channel,
            status,
            now,
            now if channel == "sms" and status == "sent" else None,
            2 if channel == "sms" and status == "sent" else 0,
        )
    await store.record_results(pool, b.id, [store.RecipientResult(c, s, None, ch) for c, ch, s in outcomes], now)
    await pool.execute(
        "INSERT INTO events (event_id, customer_id, name, occurred_at) VALUES ($1, $2, 'order_placed', $3)",
        f"ev-{uuid.uuid4().hex}",
        by_sms,
        now + timedelta(hours=2),
    )
    row = await store.get_broadcast(pool, b.id)
    assert row is not None
    report = await store.report(pool, row)

    assert (report.sent, report.clicked, report.clicks, report.converted) == (2, 1, 2, 1)
    assert report.by_channel == {
        "email": store.ChannelReport(sent=1, failed=0, opened=0, clicked=0, clicks=0, converted=0),
        "sms": store.ChannelReport(sent=1, failed=1, opened=0, clicked=1, clicks=2, converted=1),
    }
