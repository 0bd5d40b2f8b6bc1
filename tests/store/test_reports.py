"""Report SQL on hand-made rows in a database of its own: channel KPIs, date ranges, experiment arms.

The journey report end to end (a real journey run by the engine) is in tests/api/test_routes_reports.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client

from api import journey_report as journey_report_module
from api.journey_report import channel_report
from config.settings import Settings
from devstack.postgres import EmbeddedPostgres
from journeys.models import Journey
from store import journeys as journey_store
from store import reports
from store.reports import ExperimentArm, Filters
from tests.support.databases import own_database
from tests.support.mail import free_port

JAN = datetime(2026, 1, 5, 12, tzinfo=UTC)
FEB = datetime(2026, 2, 10, 12, tzinfo=UTC)
JANUARY = Filters(since=datetime(2026, 1, 1, tzinfo=UTC), until=datetime(2026, 2, 1, tzinfo=UTC))


@pytest_asyncio.fixture(loop_scope="session")
async def empty(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database of its own: the channel KPIs count every journey's messages."""
    async with own_database(postgres, "reports") as pool:
        yield pool


async def message(
    db: asyncpg.Pool, journey: str, step: str, channel: str, status: str, at: datetime, entry: str | None = None
) -> str:
    key = f"{journey}:cust:{entry or uuid.uuid4().hex}:{step}:1"
    await db.execute(
        """INSERT INTO messages (idempotency_key, journey_id, journey_version, step_id, customer_id, entry_id,
                                 channel, kind, status, created_at)
           VALUES ($1, $2, 1, $3, 'cust', $4, $5, 'marketing', $6, $7)""",
        key,
        journey,
        step,
        entry or key,
        channel,
        status,
        at,
    )
    return key


async def engagement_event(db: asyncpg.Pool, name: str, key: str, **properties: Any) -> None:
    await db.execute(
        "INSERT INTO events (event_id, customer_id, name, properties, occurred_at) VALUES ($1, 'cust', $2, $3, $4)",
        uuid.uuid4().hex,
        name,
        {"message_key": key, **properties},
        JAN,
    )


async def conversion(db: asyncpg.Pool, journey: str, entry: str, value: float | None, key: str, at: datetime) -> None:
    await db.execute(
        """INSERT INTO conversions (journey_id, journey_version, customer_id, entry_id, event_id, event_name, value,
                                    last_message_key, converted_at)
           VALUES ($1, 1, 'cust', $2, $3, 'buy', $4, $5, $6)""",
        journey,
        entry,
        uuid.uuid4().hex,
        value,
        key,
        at,
    )


async def test_channel_kpis_count_volume_engagement_conversions_and_cost_in_the_range(empty: asyncpg.Pool) -> None:
    db = empty
    email = [await message(db, "j1", "hello", "email", "sent", JAN) for _ in range(3)]
    await message(db, "j2", "promo", "email", "skipped", JAN)
    sms = [await message(db, "j2", "promo", "sms", "sent", JAN) for _ in range(2)]
    february = await message(db, "j1", "hello", "email", "sent", FEB)
    await engagement_event(db, "email_opened", email[0], machine=False)
    await engagement_event(db, "email_opened", email[0], machine=False)  # the same message opened twice: one
    await engagement_event(db, "email_opened", email[1], machine=True)
    await engagement_event(db, "email_clicked", email[0], link="https://example.com")
    await conversion(db, "j1", "e1", 50, email[2], JAN)
    await conversion(db, "j2", "e2", 20, sms[0], JAN)
    await conversion(db, "j2", "e3", None, sms[1], JAN)
    await conversion(db, "j1", "e4", 80, february, FEB)
    settings = Settings(channel_costs={"email": 0.01, "sms": 0.05})

    report = await channel_report(db, settings, JANUARY)

    by_channel = {k.channel: k for k in report.channels}
    assert set(by_channel) == {"email", "sms"}
    assert by_channel["email"].model_dump() == dict(
        channel="email",
        messages=4,
        sent=3,
        skipped=1,
        delivered=3,
        opened=2,
        opened_human=1,
        clicked=1,
        cost=pytest.approx(0.03),
        open_rate=pytest.approx(1 / 3),
        click_rate=pytest.approx(1 / 3),
        unsubscribe_rate=0.0,
        converted=1,
        revenue=50.0,
        cost_per_conversion=pytest.approx(0.03),
        failed=0,
        bounced=0,
        unsubscribed=0,
        by_channel=None,
    )
    sms_kpi = by_channel["sms"]
    assert (sms_kpi.sent, sms_kpi.delivered, sms_kpi.converted, sms_kpi.revenue) == (2, None, 2, 20.0)
    assert sms_kpi.cost == pytest.approx(0.10) and sms_kpi.cost_per_conversion == pytest.approx(0.05)

    everything = {k.channel: k for k in (await channel_report(db, settings, Filters())).channels}
    assert (everything["email"].sent, everything["email"].converted, everything["email"].revenue) == (4, 2, 130.0)
    february_only = Filters(since=datetime(2026, 2, 1, tzinfo=UTC))
    assert [(k.channel, k.sent) for k in (await channel_report(db, settings, february_only)).channels] == [("email", 1)]


async def test_experiment_arms_of_several_split_steps_and_the_holdout(empty: asyncpg.Pool) -> None:
    db = empty
    journey = f"arms-{uuid.uuid4().hex[:8]}"
    rows = []
    # Entries e0..e7: split "subject" a/b, then split "offer" x/y; h0..h1 held out (one converted).
    for i in range(8):
        rows.append((f"e{i}", "subject", "split", "a" if i < 5 else "b", JAN))
        rows.append((f"e{i}", "offer", "split", "x" if i % 2 else "y", JAN))
    rows.append(("e0", "subject", "split", "a", JAN))  # a loop's second visit does not count twice
    rows += [("h0", "$holdout", "holdout", "converted", JAN), ("h1", "$holdout", "holdout", "held_out", FEB)]
    visits: dict[tuple[str, str], int] = {}
    for entry, step, step_type, outcome, at in rows:
        visits[(entry, step)] = visits.get((entry, step), 0) + 1
        await db.execute(
            """INSERT INTO step_outcomes (journey_id, journey_version, customer_id, entry_id, step_id, visit,
                                          step_type, outcome, detail, workflow_id, run_id, recorded_at)
               VALUES ($1, 1, 'cust', $2, $3, $4, $5, $6, $7, 'wf', 'run', $8)""",
            journey,
            entry,
            step,
            visits[(entry, step)],
            step_type,
            outcome,
            {"variant": outcome} if step_type == "split" else {},
            at,
        )
    for entry, value in (("e0", 10.0), ("e1", 20.0), ("e6", 5.0), ("h0", 7.0)):
        await conversion(db, journey, entry, value, "none", JAN)

    arms = await reports.experiment_arms(db, journey)

    assert arms == [
        ExperimentArm("$holdout", "holdout", entered=2, converted=1, revenue=7.0),
        ExperimentArm("offer", "x", entered=4, converted=1, revenue=20.0),  # e1, e3, e5, e7
        ExperimentArm("offer", "y", entered=4, converted=2, revenue=15.0),  # e0, e2, e4, e6
        ExperimentArm("subject", "a", entered=5, converted=2, revenue=30.0),
        ExperimentArm("subject", "b", entered=3, converted=1, revenue=5.0),
    ]
    in_january = await reports.experiment_arms(db, journey, since=JANUARY.since, until=JANUARY.until)
    assert [(a.step_id, a.variant, a.entered) for a in in_january if a.step_id == "$holdout"] == [
        ("$holdout", "holdout", 1)
    ]
    assert await reports.experiment_arms(db, journey, version=2) == []


async def test_the_report_answers_without_waiting_counts_when_temporal_does_not(
    empty: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journey_report_module, "WAITING_TIMEOUT", timedelta(seconds=1))
    journey = Journey.model_validate(
        {
            "id": f"down-{uuid.uuid4().hex[:8]}",
            "name": "Temporal down",
            "trigger": {"event": "start"},
            "steps": [{"id": "pause", "type": "wait", "duration": "1d"}],
        }
    )
    await journey_store.publish(empty, journey)
    # Nothing listens on the port: every count fails (the lazy client keeps trying until the timeout).
    client = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)

    report = await journey_report_module.journey_report(empty, client, Settings(), Filters(journey.id))

    assert report is not None and report.entered == 0
    assert [(s.step_id, s.waiting_now) for s in report.steps] == [("pause", None)]
    assert report.waiting_note is not None and "waiting_now is unknown" in report.waiting_note


async def test_the_count_tables_stay_exact_under_concurrent_writes_rollbacks_deletes_and_compaction(
    empty: asyncpg.Pool,
) -> None:
    db = empty
    journey = f"busy-{uuid.uuid4().hex[:8]}"
    filters = Filters(journey)

    async def writer(n: int) -> None:
        for i in range(15):
            async with db.acquire() as conn:
                transaction = conn.transaction()
                await transaction.start()
                entry = f"w{n}-{i}"
                await conn.execute(
                    "INSERT INTO journey_entries (journey_id, customer_id, entry_id, version, entered_at)"
                    " VALUES ($1, $2, $3, 1 + $4 % 2, $5)",
                    journey,
                    f"c{n}",
                    entry,
                    i,
                    JAN + timedelta(days=i % 3),
                )
                for step, outcome, detail in (
                    ("hello", "skipped" if i % 4 == 0 else "sent", {"reason": f"frequency_cap: {n} per 1d"}),
                    ("pause", "waited", {}),
                ):
                    await conn.execute(
                        """INSERT INTO step_outcomes (journey_id, journey_version, customer_id, entry_id, step_id,
                                                      step_type, outcome, detail, workflow_id, run_id, recorded_at)
                           VALUES ($1, 1 + $6 % 2, $2, $3, $4, $5, $7, $8, 'wf', 'run', $9)""",
                        journey,
                        f"c{n}",
                        entry,
                        step,
                        "send" if step == "hello" else "wait",
                        i,
                        outcome,
                        detail if outcome == "skipped" else {},
                        JAN + timedelta(days=i % 3),
                    )
                await message(
                    db=conn, journey=journey, step="hello", channel="email", status="sent", at=JAN, entry=entry
                )
                if i % 5 == 4:
                    await transaction.rollback()  # a failed send: nothing of it may be counted
                else:
                    await transaction.commit()

    async def compactor() -> None:
        for _ in range(20):
            await reports.outcome_counts(db, filters)  # compacts, then reads
            await reports.message_counts(db, filters)
            await reports.entered(db, filters)
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(n) for n in range(4)), compactor(), compactor())
    # Rows removed (an erasure's duplicates) and re-keyed afterwards are counted out and in again.
    await db.execute("DELETE FROM step_outcomes WHERE journey_id = $1 AND entry_id LIKE 'w0-%'", journey)
    await db.execute("DELETE FROM journey_entries WHERE journey_id = $1 AND entry_id LIKE 'w0-%'", journey)
    await db.execute("UPDATE messages SET status = 'failed' WHERE journey_id = $1 AND entry_id LIKE 'w1-%'", journey)

    for scope in (filters, Filters(journey, version=2), Filters(journey, since=JAN + timedelta(days=1))):
        # The same counts, scanned from the recorded rows (the SQL the variant filter uses, without a variant).
        counted = sorted(await reports.outcome_counts(db, scope), key=repr)
        scanned = await db.fetch(reports._OUTCOMES_SQL, *scope.params())
        reasons = await db.fetch(reports._REASONS_SQL, *scope.params())
        assert counted == sorted((reports.OutcomeCount(**dict(r)) for r in [*scanned, *reasons]), key=repr)
        assert counted  # something to compare
        direct_entries = await db.fetchval(
            "SELECT count(*) FROM journey_entries WHERE journey_id = $1 AND ($2::int IS NULL OR version = $2)"
            " AND entered_at >= coalesce($3, '-infinity'::timestamptz)",
            journey,
            scope.version,
            scope.since,
        )
        assert await reports.entered(db, scope) == direct_entries
    messages_counted = await reports.message_counts(db, filters)
    assert [(m.sent, m.failed) for m in messages_counted] == [(3 * 12, 12)]  # 4 writers x 12 committed; w1 failed
    leftover = await db.fetchval("SELECT count(*) FROM report_outcome_counts WHERE journey_id = $1 AND delta", journey)
    assert leftover == 0  # the last read compacted everything


async def test_a_message_opened_many_times_at_once_counts_once(empty: asyncpg.Pool) -> None:
    key = await message(empty, f"opens-{uuid.uuid4().hex[:8]}", "hello", "email", "sent", JAN)
    journey = key.split(":", 1)[0]

    async def open_it(machine: bool) -> None:
        async with empty.acquire() as conn, conn.transaction():
            await engagement_event(conn, "email_opened", key, machine=machine)
            await asyncio.sleep(0.01)  # hold the transaction open while the others try

    await asyncio.gather(*(open_it(machine=i % 2 == 0) for i in range(6)))
    await engagement_event(empty, "email_clicked", key)
    await engagement_event(empty, "email_opened", f"{journey}:nobody:none:hello:1", machine=False)  # no such message

    [counted] = await reports.message_engagement(empty, Filters(journey))
    assert (counted.step_id, counted.opened, counted.opened_human, counted.clicked) == ("hello", 1, 1, 1)


async def test_daily_counts_split_entries_steps_and_conversions_by_utc_day(empty: asyncpg.Pool) -> None:
    db = empty
    journey = f"daily-{uuid.uuid4().hex[:8]}"
    late, early = datetime(2026, 3, 1, 23, 30, tzinfo=UTC), datetime(2026, 3, 2, 0, 30, tzinfo=UTC)
    entries = [("e0", late, 1), ("e1", late, 1), ("e2", early, 1), ("e3", early, 2), ("old", JAN, 1)]
    for entry, at, version in entries:
        await db.execute(
            "INSERT INTO journey_entries (journey_id, customer_id, entry_id, version, entered_at)"
            " VALUES ($1, $2, $2, $3, $4)",
            journey,
            entry,
            version,
            at,
        )
    outcomes = [
        ("e0", "hello", 1, late),
        ("e0", "hello", 2, early),
        ("e1", "hello", 1, early),
        ("e2", "wait", 1, early),
    ]
    for entry, step, visit, at in outcomes:  # e0's second visit of "hello" (a loop) is not a new entry there
        await db.execute(
            """INSERT INTO step_outcomes (journey_id, journey_version, customer_id, entry_id, step_id, visit,
                                          step_type, outcome, workflow_id, run_id, recorded_at)
               VALUES ($1, 1, $2, $2, $3, $4, 'send', 'sent', 'wf', 'run', $5)""",
            journey,
            entry,
            step,
            visit,
            at,
        )
    await conversion(db, journey, "e0", 10.0, "none", early)
    march = Filters(journey, None, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))

    counts = await reports.daily_counts(db, march)

    first, second = late.date(), early.date()
    assert {(c.day, c.series): c.count for c in counts} == {
        (first, "$entered"): 2,
        (first, "hello"): 1,
        (second, "$entered"): 2,
        (second, "hello"): 1,
        (second, "wait"): 1,
        (second, "$converted"): 1,
    }
    version_2 = await reports.daily_counts(db, Filters(journey, 2, march.since, march.until))
    assert [(c.day, c.series, c.count) for c in version_2] == [(second, "$entered", 1)]
    # Each day's figures are the report's over that day.
    for day in (first, second):
        start = datetime.combine(day, datetime.min.time(), UTC)
        one_day = Filters(journey, None, start, start + timedelta(days=1))
        assert await reports.entered(db, one_day) == sum(
            c.count for c in counts if c.day == day and c.series == "$entered"
        )
    by_day = await reports.entries_by_day(db, first, second + timedelta(days=1))
    assert by_day[journey] == {first: 2, second: 2}


async def test_versions_are_listed_newest_first_with_their_checksum(empty: asyncpg.Pool) -> None:
    journey = Journey.model_validate(
        {"id": f"ver-{uuid.uuid4().hex[:8]}", "name": "V", "trigger": {"event": "go"},
         "steps": [{"id": "pause", "type": "wait", "duration": "1h"}]}
    )  # fmt: skip
    await journey_store.publish(empty, journey)
    changed = journey.model_copy(update={"name": "V2"})
    await journey_store.publish(empty, changed)
    versions = await journey_store.list_versions(empty, journey.id)
    assert [v.version for v in versions] == [2, 1]
    assert [v.checksum for v in versions] == [journey_store.checksum(changed), journey_store.checksum(journey)]
    assert versions[0].published_at >= versions[1].published_at
    assert await journey_store.list_versions(empty, "no-such-journey") == []
