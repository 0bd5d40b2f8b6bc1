"""``python -m bench.attribution_sql``: the whole ``GET /v1/attribution`` path over a loaded database (not a test).

Starts a fresh embedded PostgreSQL (default settings) in a temp dir, migrates it and loads with COPY, over
``--customers`` customers (default 200,000) and 90 days: ``--conversions`` ``order_placed`` events with a ``total``
(default 100,000), as many other events (opens and page views, which the conversion query must skip), and
``--messages`` messages (default 1,000,000: email, SMS and push over four journeys and twenty steps; 8 % skipped,
10 % clicked). Then ``VACUUM ANALYZE`` (as autovacuum would have), and for ``last``, ``linear``, ``time_decay`` and
``data_driven`` (``--models``) calls ``api.attribution_report.attribution_answer``, the function behind the route
(SQL, DataFrames, crediting), ``--runs`` times (default 3) after one warm-up, and prints the median and the rows
read (conversions and touches), with the time of the two queries alone. The target is under 5 s per model.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg
import numpy as np
import pandas as pd

from api.attribution_report import attribution_answer
from config.settings import Settings
from devstack.postgres import EmbeddedPostgres
from journeys.durations import parse_duration
from store import attribution as attribution_store
from store import create_pool, migrate

CHANNELS = np.array(["email", "sms", "push"])
JOURNEYS = np.array(["welcome", "winback", "cart", "vip"])
STEPS = np.array([f"step-{i}" for i in range(20)])
START = pd.Timestamp("2026-01-01", tz="UTC")
SPAN_SECONDS = 90 * 86400
CHUNK = 200_000


async def _copy_frame(conn: asyncpg.Connection, table: str, frame: pd.DataFrame) -> None:
    for first in range(0, len(frame), CHUNK):
        buffer = io.BytesIO()
        frame.iloc[first : first + CHUNK].to_csv(buffer, header=False, index=False, date_format="%Y-%m-%dT%H:%M:%S%z")
        buffer.seek(0)
        await conn.copy_to_table(table, source=buffer, columns=list(frame.columns), format="csv")


def _times(rng: np.random.Generator, n: int) -> pd.Series:
    return pd.Series(START + pd.to_timedelta(rng.integers(0, SPAN_SECONDS, n), unit="s"))


async def load(conn: asyncpg.Connection, customers: int, conversions: int, messages: int) -> None:
    rng = np.random.default_rng(12)
    ids = np.char.add("cust-", np.arange(customers).astype(str))
    orders = pd.DataFrame(
        {
            "event_id": np.char.add("order-", np.arange(conversions).astype(str)),
            "customer_id": ids[rng.integers(0, customers, conversions)],
            "name": "order_placed",
            "properties": [json.dumps({"total": round(float(v), 2)}) for v in rng.gamma(2.0, 30.0, conversions)],
            "occurred_at": _times(rng, conversions),
        }
    )
    orders["routed_at"] = orders["occurred_at"]
    await _copy_frame(conn, "events", orders)
    others = pd.DataFrame(
        {
            "event_id": np.char.add("other-", np.arange(conversions).astype(str)),
            "customer_id": ids[rng.integers(0, customers, conversions)],
            "name": np.array(["email_opened", "page_viewed"])[rng.integers(0, 2, conversions)],
            "properties": "{}",
            "occurred_at": _times(rng, conversions),
        }
    )
    others["routed_at"] = others["occurred_at"]
    await _copy_frame(conn, "events", others)
    for first in range(0, messages, CHUNK):
        n = min(CHUNK, messages - first)
        number = np.arange(first, first + n)
        customer = ids[rng.integers(0, customers, n)]
        status = np.where(rng.random(n) < 0.08, "skipped", "sent")
        at = _times(rng, n)
        frame = pd.DataFrame(
            {
                "idempotency_key": np.char.add("msg-", number.astype(str)),
                "journey_id": JOURNEYS[rng.integers(0, len(JOURNEYS), n)],
                "journey_version": 1,
                "step_id": STEPS[rng.integers(0, len(STEPS), n)],
                "customer_id": customer,
                "entry_id": np.char.add("entry-", number.astype(str)),
                "channel": CHANNELS[rng.integers(0, len(CHANNELS), n)],
                "kind": "marketing",
                "status": status,
                "created_at": at,
                "sent_at": at.where(pd.Series(status == "sent")),
                "decided_at": at,
                "clicks": np.where((status == "sent") & (rng.random(n) < 0.1), 1, 0),
            }
        )
        await _copy_frame(conn, "messages", frame)
    await conn.execute("VACUUM ANALYZE")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--conversions", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--window", default="30d")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="last,linear,time_decay,data_driven")
    parser.add_argument("--keep", type=Path, help="keep the database in this folder (reused if loaded)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="parcours-bench-attribution-"))
    settings = Settings(channel_costs={"email": 0.001, "sms": 0.05, "push": 0.0})
    with EmbeddedPostgres(folder) as server:
        url = server.ensure_database("bench")
        await migrate(url)
        pool = await create_pool(url, min_size=2, max_size=4)
        try:
            async with pool.acquire() as conn:
                if not await conn.fetchval("SELECT count(*) FROM messages"):
                    started = time.perf_counter()
                    await load(conn, args.customers, args.conversions, args.messages)
                    print(f"loaded in {time.perf_counter() - started:.1f} s")
                events = await conn.fetchval("SELECT count(*) FROM events")
                messages = await conn.fetchval("SELECT count(*) FROM messages")
            print(f"events {events:,}, messages {messages:,}, window {args.window}")
            window = parse_duration(args.window)
            started = time.perf_counter()
            conversions, touches = await asyncio.gather(
                attribution_store.conversions(pool, "order_placed", "total"),
                attribution_store.touches(pool, "order_placed", "total", window),
            )
            sql = time.perf_counter() - started
            print(f"the two queries alone: {sql:.2f} s; rows read: {len(conversions):,} conversions, "
                  f"{len(touches):,} touches")  # fmt: skip
            print(f"{'model':<12}{'median':>10}{'min':>10}   credited")
            for model in args.models.split(","):

                async def answer(model: str = model) -> float:
                    result = await attribution_answer(
                        pool, settings, event="order_placed", value="total", model=model, window=args.window,
                        half_life="7d", clicked_only=False, since=None, until=None,
                    )  # fmt: skip
                    return sum(r.attributed_conversions for r in result.report.rows)

                await answer()
                times = []
                credited = 0.0
                for _ in range(args.runs):
                    began = time.perf_counter()
                    credited = await answer()
                    times.append(time.perf_counter() - began)
                print(f"{model:<12}{statistics.median(times):9.2f}s{min(times):9.2f}s   {credited:,.0f}")
        finally:
            await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
