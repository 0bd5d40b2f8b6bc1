"""``python -m bench.console``: how fast every console page answers, server side, with a million step outcomes.

Starts a fresh embedded PostgreSQL (default settings) in a temp dir, migrates it, loads the volume of
``bench.reports`` (``load``: 1,000,000 step outcomes of the reported journey plus 400,000 of a second one,
1,000,000 messages, opens and clicks as events, conversions), then adds what the console shows beyond the reports:
a customer row for every entry, two named segments, a broadcast to the 40,000 customers of one segment
(recipients settled, their messages recorded), and one heavy customer with 20,000 events and 20,000 step
outcomes. Then it runs the app
in process (``create_app``, httpx on ASGI), signs in like a browser (cookie, CSRF), and requests each page N times
after one warm-up, printing p50 and p95 per page against the 300 ms target, and the same for two baselines in the
same run: ``/healthz`` (the app's floor) and ``GET /v1/journeys/{id}/report`` (the report API the journey page is
built on), with each page's p50 as a ratio of the report API's.

No Temporal: the app gets no client, so the live figures (customers running now, waiting at a step, current
journeys) degrade to "unknown" as they do when Temporal does not answer (the pages say so), and their cost is
not in these figures (each is one visibility call with a 3 s timeout). Run it alone: it is CPU-bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx

from api.app import create_app
from api.journey_report import journey_report
from bench.reports import JOURNEY, START, _copy, load
from config.logging import configure_logging
from config.settings import Settings
from devstack.postgres import EmbeddedPostgres
from journeys.broadcasts import Broadcast
from journeys.models import Audience
from store import broadcasts as broadcast_store
from store import create_pool, migrate
from store import segments as segment_store
from store.reports import Filters

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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200_000, help="entries of the reported journey (x5 outcomes)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--heavy", type=int, default=20_000, help="events and step outcomes of the heavy customer")
    parser.add_argument("--keep", type=Path, help="keep the database in this folder (reused if it exists)")
    parser.add_argument("--only", help="time only the pages whose label contains this (baselines always run)")
    args = parser.parse_args()
    configure_logging("ERROR", "console")  # the pages log each live figure they could not get: not measured here
    folder = args.keep or Path(tempfile.mkdtemp(prefix="parcours-bench-console-"))
    with EmbeddedPostgres(folder) as server:
        url = server.ensure_database("bench")
        await migrate(url)
        pool = await create_pool(url, min_size=2, max_size=10)
        try:
            async with pool.acquire() as conn:
                if not await conn.fetchval("SELECT count(*) FROM step_outcomes"):
                    started = time.perf_counter()
                    await load(conn, args.entries)
                    counts = await extras(conn, args.heavy)
                    print(f"loaded in {time.perf_counter() - started:.1f} s")
                else:
                    tables = ("customers", "step_outcomes", "messages", "events", "broadcast_recipients")
                    counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}
                typical = await conn.fetchval(
                    "SELECT customer_id FROM events WHERE customer_id LIKE $1 ORDER BY event_id LIMIT 1",
                    f"{JOURNEY['id']}-%",
                )
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
                _env_file=None, api_keys=[{"key": KEY, "role": "admin"}], log_format="console", log_level="ERROR"
            )  # type: ignore[call-arg]
            app = create_app(settings, pool=pool, client=None)  # type: ignore[arg-type]  # no Temporal: see above
            jid = str(JOURNEY["id"])
            pages = {
                "journeys list": "/console/journeys",
                "journey page (graph + report)": f"/console/journeys/{jid}",
                "journey page, waiting at a step": f"/console/journeys/{jid}?step=remind",
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
            async with httpx.AsyncClient(transport=transport, base_url="http://parcours.test") as http:
                await signed_in(http)
                deep = await http.get(pages["heavy customer timeline"] or "")
                for _ in range(20):  # follow "Older" 20 pages down
                    found = re.search(r'href="([^"]+/timeline\?before=[^"]+)"', deep.text)
                    assert found is not None
                    deep = await http.get(found.group(1).replace("&amp;", "&"))
                pages["heavy timeline, deep page"] = found.group(1).replace("&amp;", "&")
                api = {"X-API-Key": KEY}
                results: dict[str, list[float]] = {}
                results["baseline: /healthz"] = await timed(http, "/healthz", args.runs)
                results["baseline: report API"] = await timed(
                    http, f"/v1/journeys/{jid}/report", args.runs, headers=api
                )
                for label, path in pages.items():
                    assert path is not None
                    if args.only is None or args.only in label:
                        results[label] = await timed(http, path, args.runs)
            reference = statistics.median(results["baseline: report API"])
            print(
                f"\n{'page':<36} {'p50 ms':>8} {'p95 ms':>8} {'/report':>8}"
                f"  target {TARGET_MS:.0f} ms ({args.runs} runs)"
            )
            slow = []
            for label, times in results.items():
                p50, p95 = statistics.median(times), p(times, 0.95)
                verdict = "" if label.startswith("baseline") else ("ok" if p95 < TARGET_MS else "SLOW")
                if verdict == "SLOW":
                    slow.append(label)
                print(f"{label:<36} {p50:8.1f} {p95:8.1f} {p50 / reference:8.2f}  {verdict}")
            print("\nevery page under the target at p95" if not slow else f"\nover the target: {', '.join(slow)}")
        finally:
            await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
