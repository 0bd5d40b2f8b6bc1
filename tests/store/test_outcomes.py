"""Step outcomes (store.outcomes): each visit of a step is written once, whatever retries or replays."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from store import outcomes as outcome_store

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def outcome(customer: str, entry: str, step: str, visit: int = 1, **fields: object) -> outcome_store.StepOutcome:
    base = outcome_store.StepOutcome(
        journey_id="welcome",
        journey_version=1,
        customer_id=customer,
        entry_id=entry,
        step_id=step,
        visit=visit,
        step_type="wait",
        outcome="waited",
        detail={"seconds": 60},
        workflow_id=f"welcome:{customer}",
        run_id="run-1",
        recorded_at=T0 + timedelta(minutes=visit),
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


async def outcomes_of(pool: asyncpg.Pool, customer: str) -> list[tuple[object, ...]]:
    rows = await pool.fetch(
        """SELECT step_id, visit, step_type, outcome, detail, run_id, recorded_at FROM step_outcomes
            WHERE customer_id = $1 ORDER BY step_id, visit""",
        customer,
    )
    return [tuple(r) for r in rows]


async def test_each_visit_of_a_step_is_recorded_once_per_run(pool: asyncpg.Pool) -> None:
    customer, entry = uid("c"), uid("entry")
    await outcome_store.record_outcomes(pool, [outcome(customer, entry, "pause"), outcome(customer, entry, "pause", 2)])
    # A retried or replayed activity of the same run records the first visit again: the first row stands.
    await outcome_store.record_outcomes(
        pool, [outcome(customer, entry, "pause", outcome="exited"), outcome(customer, entry, "end")]
    )
    assert await outcomes_of(pool, customer) == [
        ("end", 1, "wait", "waited", {"seconds": 60}, "run-1", T0 + timedelta(minutes=1)),
        ("pause", 1, "wait", "waited", {"seconds": 60}, "run-1", T0 + timedelta(minutes=1)),
        ("pause", 2, "wait", "waited", {"seconds": 60}, "run-1", T0 + timedelta(minutes=2)),
    ]


async def test_a_reset_run_supersedes_the_earlier_attempt_and_reports_count_only_the_current(
    pool: asyncpg.Pool,
) -> None:
    journey, customer, entry = uid("j"), uid("c"), uid("entry")
    failed = outcome(
        customer, entry, "hello", journey_id=journey, step_type="send", outcome="failed",
        detail={"reason": "template_error: divided by zero"}, workflow_id=f"{journey}:{customer}",
    )  # fmt: skip
    await outcome_store.record_outcomes(pool, [failed])
    wid = f"{journey}:{customer}"
    assert set(await outcome_store.failed_steps(pool, [wid])) == {(wid, "hello")}

    # The operator fixed the template and reset the run: the new run (another run id) sends.
    sent = dataclasses.replace(failed, outcome="sent", detail={"channel": "email"}, run_id="run-2")
    await outcome_store.record_outcomes(pool, [sent])
    await outcome_store.record_outcomes(pool, [sent])  # its activity retried: nothing more

    rows = await pool.fetch(
        "SELECT outcome, run_id, superseded_at IS NOT NULL AS superseded FROM step_outcomes"
        " WHERE journey_id = $1 ORDER BY id",
        journey,
    )
    assert [tuple(r) for r in rows] == [("failed", "run-1", True), ("sent", "run-2", False)]  # both attempts kept
    assert await outcome_store.failed_steps(pool, [wid]) == {}  # no longer listed as failed
    counts = await pool.fetch(
        "SELECT outcome, sum(visits)::int AS visits, sum(entries)::int AS entries FROM report_outcome_counts"
        " WHERE journey_id = $1 GROUP BY outcome HAVING sum(visits) <> 0",
        journey,
    )
    assert {r["outcome"]: (r["visits"], r["entries"]) for r in counts} == {"sent": (1, 1)}


async def test_another_entry_records_its_own_outcomes(pool: asyncpg.Pool) -> None:
    customer = uid("c")
    await outcome_store.record_outcomes(pool, [outcome(customer, uid("entry"), "pause")])
    await outcome_store.record_outcomes(pool, [outcome(customer, uid("entry"), "pause")])
    await outcome_store.record_outcomes(pool, [])
    assert len(await outcomes_of(pool, customer)) == 2
