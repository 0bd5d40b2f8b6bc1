"""``python -m bench.reports``: how fast the journey report answers over a million step outcomes and messages.

Starts a fresh embedded PostgreSQL (default settings) in a temp dir, migrates it, loads a realistic volume with
COPY (the count tables' triggers fire for every row), lets autovacuum's work be done (``VACUUM ANALYZE``, as on a
database that has been running), runs the report once (it folds the count tables' deltas; the count tables are
vacuumed after, as autovacuum would), then runs the journey report (``api.journey_report.journey_report``, the code
behind ``GET /v1/journeys/{id}/report``, Temporal's live counts left out) N times unfiltered and N times with
filters, and the channel KPIs, and prints the median and p95 latency of each and the row counts. Run it alone: it
is CPU-bound and the machine's other work moves it.

Volume (``--entries`` scales it; default 200,000): the reported journey (a split, three sends, a wait for a
purchase) has 5 step outcomes and 3 messages per entry, i.e. 1,000,000 outcomes and 600,000 messages; a second
journey adds 400,000 messages and their outcomes, so the messages table holds 1,000,000 rows. About a fifth of the
emails are opened (events), 4 % clicked, 5 % of the entries convert with a value, and there are hard bounces and
unsubscribes to credit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from api.experiments import experiments_report
from api.journey_report import channel_report, journey_report
from bench.setup import database
from config.settings import Settings
from journeys import parse_journey
from store import journeys as journey_store
from store import reports
from store.reports import Filters

JOURNEY = {
    "id": "bench-report",
    "name": "Bench report",
    "trigger": {"event": "cart_abandoned"},
    "goal": {"event": "order_placed", "value_property": "total"},
    "steps": [
        {"id": "subject", "type": "split", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
        *(
            {"id": s, "type": "send", "channel": "email", "template": {"subject": s, "text": "Your cart is waiting."}}
            for s in ("remind", "nudge", "last-call")
        ),
        {"id": "await-order", "type": "wait_for", "event": "order_placed", "timeout": "3d"},
    ],
}
OTHER = "bench-other"
START = datetime(2026, 1, 1, tzinfo=UTC)
RENDERED = json.dumps({"subject": "Your cart is waiting", "text": "Hello Ada, " + "your cart is still there. " * 12})


def _csv(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _rows(records: Iterator[tuple[Any, ...]]) -> Iterator[bytes]:
    batch: list[str] = []
    for record in records:
        batch.append(",".join(_csv(v) for v in record))
        if len(batch) == 20_000:
            yield ("\n".join(batch) + "\n").encode()
            batch = []
    if batch:
        yield ("\n".join(batch) + "\n").encode()


async def _copy(conn: asyncpg.Connection, table: str, columns: list[str], records: Iterator[tuple[Any, ...]]) -> None:
    async def source() -> Any:
        for chunk in _rows(records):
            yield chunk

    await conn.copy_to_table(table, source=source(), columns=columns, format="csv")


def _entries(journey: str, count: int, seed: int) -> Iterator[tuple[str, str, datetime]]:
    rnd = random.Random(seed)
    for i in range(count):
        yield f"{journey}-c{i}", f"ev-{journey}-{i}", START + timedelta(seconds=rnd.randrange(60 * 86400))


async def _copy_outcomes(conn: asyncpg.Connection, outcomes: list[tuple[Any, ...]]) -> None:
    await _copy(
        conn,
        "step_outcomes",
        [
            "journey_id",
            "journey_version",
            "customer_id",
            "entry_id",
            "step_id",
            "step_type",
            "outcome",
            "detail",
            "workflow_id",
            "run_id",
            "recorded_at",
            "visit",
        ],
        ((*o[:7], json.dumps(o[7]), o[8], "run", o[9], o[10] if len(o) > 10 else 1) for o in outcomes),
    )


async def load(conn: asyncpg.Connection, entries: int) -> dict[str, int]:
    """Load the volume; returns the row count of every table loaded."""
    rnd = random.Random(7)
    journey = parse_journey(JOURNEY)
    await journey_store.publish(conn, journey)
    await journey_store.publish(conn, journey.model_copy(update={"id": OTHER, "name": "Bench other"}))
    reported = list(_entries(journey.id, entries, 1))
    other = list(_entries(OTHER, entries, 2))
    outcomes: list[tuple[Any, ...]] = []
    messages: list[tuple[Any, ...]] = []
    opens: list[tuple[Any, ...]] = []
    conversions: list[tuple[Any, ...]] = []
    for jid, people, sends in ((journey.id, reported, ("remind", "nudge", "last-call")), (OTHER, other, ("remind",))):
        for customer, entry, at in people:
            wf = f"{jid}:{customer}"
            if jid == journey.id:
                variant = "a" if rnd.random() < 0.5 else "b"
                outcomes.append((jid, 1, customer, entry, "subject", "split", variant, {"variant": variant}, wf, at))
            for n, step in enumerate(sends * (1 if jid == journey.id else 2)):
                key = f"{jid}:{customer}:{entry}:{step}:{n // len(sends) + 1}"
                sent_at = at + timedelta(hours=n * 24)
                status, reason = ("skipped", "no_consent:email") if rnd.random() < 0.08 else ("sent", None)
                detail = {"channel": "email", "message_key": key, **({"reason": reason} if reason else {})}
                visit = n // len(sends) + 1
                outcomes.append((jid, 1, customer, entry, step, "send", status, detail, wf, sent_at, visit))
                rendered = RENDERED if status == "sent" else None
                messages.append((key, jid, 1, step, customer, entry, "email", status, reason, rendered, sent_at))
                if status == "sent" and rnd.random() < 0.2:
                    opens.append((uuid.uuid4().hex, customer, "email_opened", key, rnd.random() < 0.4, sent_at))
                    if rnd.random() < 0.2:
                        opens.append((uuid.uuid4().hex, customer, "email_clicked", key, None, sent_at))
            if jid == journey.id:
                converted = rnd.random() < 0.05
                outcome = "goal" if converted else "timeout"
                outcomes.append((jid, 1, customer, entry, "await-order", "wait_for", outcome, {}, wf, at))
                if converted:
                    value = round(rnd.uniform(10, 300), 2)
                    conversions.append((jid, 1, customer, entry, f"o-{entry}", value, key, at + timedelta(days=2)))
    await _copy(
        conn,
        "journey_entries",
        ["journey_id", "customer_id", "entry_id", "version", "entered_at"],
        ((jid, c, e, 1, at) for jid, people in ((journey.id, reported), (OTHER, other)) for c, e, at in people),
    )
    # In growing chunks, each followed by ANALYZE: the experiment counts' trigger (migration 0021) looks each entry
    # up, and on tables whose statistics still say "empty" its plans go quadratic within one COPY.
    done, chunk = 0, 5_000
    while done < len(outcomes):
        await _copy_outcomes(conn, outcomes[done : done + chunk])
        await conn.execute("ANALYZE step_outcomes, report_experiment_entries, report_experiment_locks")
        done, chunk = done + chunk, chunk * 2
    await _copy(
        conn,
        "messages",
        [
            "idempotency_key",
            "journey_id",
            "journey_version",
            "step_id",
            "customer_id",
            "entry_id",
            "channel",
            "status",
            "reason",
            "rendered",
            "created_at",
            "kind",
            "recipient",
            "sent_at",
            "decided_at",
        ],
        ((*m, "marketing", f"{m[4]}@example.com", m[10] if m[7] == "sent" else None, m[10]) for m in messages),
    )
    await _copy(
        conn,
        "events",
        ["event_id", "customer_id", "name", "properties", "occurred_at", "routed_at"],
        (
            (eid, c, name, json.dumps({"message_key": key, **({"machine": m} if m is not None else {})}), at, at)
            for eid, c, name, key, m, at in opens
        ),
    )
    await _copy(
        conn,
        "conversions",
        [
            "journey_id",
            "journey_version",
            "customer_id",
            "entry_id",
            "event_id",
            "event_name",
            "value",
            "last_message_key",
            "converted_at",
        ],
        ((*c[:5], "order_placed", *c[5:]) for c in conversions),
    )
    await _bounces_and_unsubscribes(conn, reported, rnd)
    await conn.execute("VACUUM ANALYZE")
    tables = ("journey_entries", "step_outcomes", "messages", "events", "conversions", "suppressions", "consent_events")
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}


async def _bounces_and_unsubscribes(
    conn: asyncpg.Connection, people: list[tuple[str, str, datetime]], rnd: random.Random
) -> None:
    """Customers (with an email) for 1 % of the entries; half of them bounce, half unsubscribe."""
    chosen = rnd.sample(people, len(people) // 100)
    await _copy(conn, "customers", ["id", "email"], ((c, f"{c}@example.com") for c, _, _ in chosen))
    half = len(chosen) // 2
    later = START + timedelta(days=90)
    await _copy(
        conn,
        "suppressions",
        ["channel", "address", "reason", "source", "created_at"],
        (("email", f"{c}@example.com", "hard_bounce", "generic", later) for c, _, _ in chosen[:half]),
    )
    await _copy(
        conn,
        "consent_events",
        ["customer_id", "scope", "name", "status", "source", "recorded_at"],
        ((c, "channel", "email", "withdrawn", "one_click_unsubscribe", later) for c, _, _ in chosen[half:]),
    )


async def timed(label: str, runs: int, call: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    await call()  # warm: plans, caches
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    result = {"median_ms": statistics.median(times), "p95_ms": p95, "max_ms": times[-1]}
    print(f"{label:<44} median {result['median_ms']:7.1f} ms   p95 {p95:7.1f} ms   ({runs} runs)")
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200_000, help="entries of the reported journey")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="keep the database in this folder (reused if it exists)")
    args = parser.parse_args()
    loaded: dict[str, int] = {}

    async def load_counts(conn: asyncpg.Connection) -> None:
        loaded.update(await load(conn, args.entries))

    async with database(args.keep, load=load_counts, prefix="parcours-bench-reports-") as pool:
        async with pool.acquire() as conn:
            if loaded:
                counts = loaded
            else:
                tables = ("journey_entries", "step_outcomes", "messages", "events", "conversions")
                counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}
            reported = await conn.fetchval("SELECT count(*) FROM step_outcomes WHERE journey_id = 'bench-report'")
            reported_messages = await conn.fetchval("SELECT count(*) FROM messages WHERE journey_id = 'bench-report'")
        for table, n in counts.items():
            print(f"{table:<20} {n:>10,}")
        print(f"reported journey: {reported:,} step outcomes, {reported_messages:,} messages")
        settings = Settings()
        jid = JOURNEY["id"]
        assert isinstance(jid, str)
        january = Filters(jid, 1, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
        started = time.perf_counter()
        report = await journey_report(pool, None, settings, Filters(jid))
        assert report is not None
        print(
            f"first report (folds the deltas the load left in the count tables): "
            f"{(time.perf_counter() - started) * 1000:.0f} ms"
        )
        async with pool.acquire() as conn:  # what autovacuum does next: clear the folded deltas away
            await conn.execute(
                "VACUUM ANALYZE report_outcome_counts, report_message_counts, report_entry_counts,"
                " report_engagement_counts, report_experiment_counts"
            )
        print(
            f"entered {report.entered:,}, converted {report.conversions.converted:,}, steps "
            + ", ".join(f"{s.step_id}={s.reached:,}" for s in report.steps)
        )
        await timed("journey report, no filter", args.runs, lambda: journey_report(pool, None, settings, Filters(jid)))
        await timed(
            "journey report, version + January", args.runs, lambda: journey_report(pool, None, settings, january)
        )
        await timed(
            "journey report, variant a",
            args.runs,
            lambda: journey_report(pool, None, settings, Filters(jid, variant="a")),
        )
        # The console's journey page adds these two (api/console/journey_views.py).
        month = Filters(jid, None, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC))
        async with pool.acquire() as conn:
            plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + reports.DAILY_SQL, *month.params()[:4])
        print("daily counts plan:\n  " + "\n  ".join(r[0] for r in plan))
        await timed("daily counts, 30 days (console funnel)", args.runs, lambda: reports.daily_counts(pool, month))
        await timed(
            "experiments read-out, all time",
            args.runs,
            lambda: experiments_report(pool, jid, version=None, since=None, until=None),
        )
        await timed(
            "baseline: arms + treated SQL before 0021",
            args.runs,
            lambda: asyncio.gather(
                pool.fetch(reports.ARMS_SCAN_SQL, jid, None, None, None, None),
                pool.fetchrow(reports.TREATED_SCAN_SQL, jid, None, None, None),
            ),
        )
        await timed("channel KPIs, all time", max(3, args.runs // 4), lambda: channel_report(pool, settings, Filters()))


if __name__ == "__main__":
    asyncio.run(main())
