"""The experiments' count tables (migration 0021) answer exactly what scanning the recorded rows answers.

A journey's history is written through the store's own writers where there is one (step outcomes with a reset's
supersession, conversions, an erasure), with splits, a holdout recorded late, conversions before and after the
arm, a loop's second visit, two versions and an outcome recorded out of order; then every filter is asked of both
the count tables (``store.reports.experiment_arms``/``treated_arm``) and the scanning SQL kept in store/reports.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest_asyncio

from devstack.postgres import EmbeddedPostgres
from store import privacy, reports
from store.conversions import Conversion, record_conversion
from store.migrate import MIGRATIONS_DIR
from store.outcomes import StepOutcome, record_outcomes
from tests.support.databases import own_database

DAY = datetime(2026, 3, 2, 9, tzinfo=UTC)
MIGRATION = (MIGRATIONS_DIR / "0021_experiment_counts.sql").read_text()
BACKFILL = MIGRATION[MIGRATION.index("-- What was recorded before this migration") :]
"""Migration 0021's statements that count the rows recorded before it."""
SECRET = b"test-experiment-counts"


@pytest_asyncio.fixture(loop_scope="session")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    async with own_database(postgres, "experiments") as pool:
        yield pool


def entry(journey: str, customer: str) -> str:
    return f"{journey}:{customer}:1"


async def outcome(
    db: asyncpg.Pool | asyncpg.Connection,
    journey: str,
    customer: str,
    step: str,
    step_type: str,
    result: str,
    at: datetime,
    *,
    version: int = 1,
    visit: int = 1,
    run: str = "run-1",
) -> None:
    await record_outcomes(
        db,
        [
            StepOutcome(
                journey, version, customer, entry(journey, customer), step, visit, step_type, result, {},
                f"{journey}:{customer}", run, at,
            )
        ],
    )  # fmt: skip


async def convert(
    db: asyncpg.Pool | asyncpg.Connection,
    journey: str,
    customer: str,
    value: float | None,
    at: datetime,
    variants: dict[str, str] | None = None,
) -> None:
    conversion = Conversion(
        journey, 1, customer, entry(journey, customer), uuid.uuid4().hex, "order_placed", value,
        None, None, at, variants,
    )  # fmt: skip
    assert await record_conversion(db, conversion)


async def both(
    db: asyncpg.Pool, journey: str, version: int | None, since: datetime | None, until: datetime | None
) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """(count tables, scan) for the arms and the treated arm."""
    arms = await reports.experiment_arms(db, journey, version=version, since=since, until=until)
    treated = await reports.treated_arm(db, journey, version=version, since=since, until=until)
    scanned_arms = [
        reports.ExperimentArm(**dict(r))
        for r in await db.fetch(reports.ARMS_SCAN_SQL, journey, version, since, until, None)
    ]
    row = await db.fetchrow(reports.TREATED_SCAN_SQL, journey, version, since, until)
    scanned_treated = reports.ExperimentArm("$holdout", "treated", row["entered"], row["converted"], row["revenue"])
    return (arms, treated), (scanned_arms, scanned_treated)


def ranges() -> list[tuple[datetime | None, datetime | None]]:
    midnight = DAY.replace(hour=0)
    return [
        (None, None),
        (midnight, None),
        (None, midnight + timedelta(days=1)),
        (midnight + timedelta(days=1), midnight + timedelta(days=3)),
        (midnight + timedelta(days=5), None),
    ]


async def assert_equal(db: asyncpg.Pool, journey: str) -> None:
    for version in (None, 1, 2):
        for since, until in ranges():
            counted, scanned = await both(db, journey, version, since, until)
            assert counted == scanned, (version, since, until)


async def test_the_count_tables_equal_the_scan_through_splits_holdouts_conversions_resets_and_erasure(
    db: asyncpg.Pool,
) -> None:
    journey = f"exp-{uuid.uuid4().hex[:8]}"
    # Ten entries of version 1: a first step, a split "subject" (a/b) and, for the even ones, a split "offer".
    for i in range(10):
        c, at = f"c{i}", DAY + timedelta(days=i % 3)
        await outcome(db, journey, c, "welcome", "send", "sent", at)
        await outcome(db, journey, c, "subject", "split", "a" if i < 6 else "b", at + timedelta(hours=1))
        if i % 2 == 0:
            await outcome(db, journey, c, "offer", "split", "x" if i % 4 == 0 else "y", at + timedelta(hours=2))
    await assert_equal(db, journey)

    # Conversions after the arms: one whose run kept its assignments, one naming another variant of "subject"
    # (it counts in no "subject" arm), one without a value.
    await convert(db, journey, "c0", 10.5, DAY + timedelta(days=1), {"subject": "a", "offer": "x"})
    await convert(db, journey, "c1", 20.0, DAY + timedelta(days=1), {"subject": "b"})
    await convert(db, journey, "c2", None, DAY + timedelta(days=2))
    # A conversion before the entry's split is recorded (c10: version 2, its split comes after).
    await convert(db, journey, "c10", 7.25, DAY + timedelta(days=5))
    await outcome(db, journey, "c10", "welcome", "send", "sent", DAY + timedelta(days=5, hours=1), version=2)
    await outcome(db, journey, "c10", "subject", "split", "b", DAY + timedelta(days=5, hours=2), version=2)
    await outcome(db, journey, "c11", "subject", "split", "a", DAY + timedelta(days=6), version=2)
    # A loop's second visit of a split is no new entry of the arm.
    await outcome(db, journey, "c0", "subject", "split", "a", DAY + timedelta(days=3), visit=2)
    # An entry that carried on under version 2 (treated once overall, once per version).
    await outcome(db, journey, "c3", "remind", "send", "sent", DAY + timedelta(days=4), version=2)
    # An outcome recorded out of order, earlier than the entry's first: the entry moves to that day.
    await outcome(db, journey, "c5", "late", "wait", "waited", DAY - timedelta(days=1))
    await assert_equal(db, journey)

    # The holdout: h0 converts while observed, its outcome is recorded when its window closes; h1 never converts;
    # h2 had finished a step before being held out (it leaves the treated arm).
    await convert(db, journey, "h0", 3.0, DAY + timedelta(days=1))
    await outcome(db, journey, "h0", "$holdout", "holdout", "converted", DAY + timedelta(days=2))
    await outcome(db, journey, "h1", "$holdout", "holdout", "held_out", DAY + timedelta(days=6))
    await outcome(db, journey, "h2", "welcome", "send", "sent", DAY)
    await convert(db, journey, "h2", 1.0, DAY + timedelta(days=1))
    counted, _ = await both(db, journey, None, None, None)
    treated_before = counted[1]
    await outcome(db, journey, "h2", "$holdout", "holdout", "held_out", DAY + timedelta(days=2))
    await outcome(db, journey, "h2", "$exit", "exit", "exited", DAY + timedelta(days=2))
    await assert_equal(db, journey)
    counted, _ = await both(db, journey, None, None, None)
    assert isinstance(treated_before, reports.ExperimentArm) and isinstance(counted[1], reports.ExperimentArm)
    assert counted[1].entered == treated_before.entered - 1

    # A reset: a later run of c7 records its steps again, taking the other variant; the first run's rows are
    # superseded (the arm moves to the later day), the entry's first step stays the first run's.
    await outcome(db, journey, "c7", "welcome", "send", "sent", DAY + timedelta(days=4), run="run-2")
    await outcome(db, journey, "c7", "subject", "split", "a", DAY + timedelta(days=4, hours=1), run="run-2")
    await convert(db, journey, "c7", 50.0, DAY + timedelta(days=4), {"subject": "a"})
    superseded = await db.fetchval(
        "SELECT count(*) FROM step_outcomes WHERE journey_id = $1 AND superseded_at IS NOT NULL", journey
    )
    assert superseded == 2
    await assert_equal(db, journey)

    # An erasure renames the customer's entries in outcomes and conversions alike.
    await db.execute("INSERT INTO customers (id, email) VALUES ('c0', 'c0@example.com')")
    await privacy.erase_customer(db, "c0", SECRET, requested_at=DAY + timedelta(days=7), complete=True)
    assert not await db.fetchval("SELECT count(*) FROM step_outcomes WHERE customer_id = 'c0'")
    for table in ("report_experiment_entries", "report_experiment_locks"):  # nothing keeps the erased id
        assert not await db.fetchval(f"SELECT count(*) FROM {table} WHERE entry_id LIKE '%:c0:%'")
    assert await db.fetchval("SELECT count(*) FROM report_experiment_locks WHERE entry_id LIKE '%:c1:%'")
    await assert_equal(db, journey)

    arms, treated = (await both(db, journey, None, None, None))[0]
    assert isinstance(arms, list) and isinstance(treated, reports.ExperimentArm)
    assert {(a.step_id, a.variant) for a in arms} == {
        ("$holdout", "holdout"), ("offer", "x"), ("offer", "y"), ("subject", "a"), ("subject", "b"),
    }  # fmt: skip
    assert sum(a.converted for a in arms) > 0 and treated.converted > 0 and treated.revenue > 0
    # Every delta folded away by the reads above: one row per key.
    assert not await db.fetchval(
        "SELECT count(*) FROM report_experiment_counts WHERE journey_id = $1 AND delta", journey
    )

    # The migration's fill of rows recorded before it (a live database) counts the same history the same way.
    await db.execute("DELETE FROM report_experiment_counts; DELETE FROM report_experiment_entries")
    assert await reports.experiment_arms(db, journey) == []
    await db.execute(BACKFILL)
    await assert_equal(db, journey)


async def test_an_arm_and_a_conversion_written_at_once_are_both_counted(db: asyncpg.Pool) -> None:
    """The conversion's transaction holds the entry while the split's waits for it, then sees the conversion."""
    journey = f"race-{uuid.uuid4().hex[:8]}"
    await outcome(db, journey, "c", "welcome", "send", "sent", DAY)
    async with db.acquire() as converting, db.acquire() as splitting:
        async with converting.transaction():
            await convert(converting, journey, "c", 12.0, DAY)
            pid = await splitting.fetchval("SELECT pg_backend_pid()")
            split = asyncio.ensure_future(
                outcome(splitting, journey, "c", "subject", "split", "a", DAY + timedelta(hours=1))
            )
            for _ in range(3000):  # until the split's writer waits for the entry (or, unheld, wrote at once)
                if split.done() or await converting.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", pid
                ):
                    break
                await asyncio.sleep(0.01)
        await split
    arms, treated = (await both(db, journey, None, None, None))[0]
    assert arms == [reports.ExperimentArm("subject", "a", entered=1, converted=1, revenue=12.0)]
    assert treated == reports.ExperimentArm("$holdout", "treated", entered=1, converted=1, revenue=12.0)
    await assert_equal(db, journey)
