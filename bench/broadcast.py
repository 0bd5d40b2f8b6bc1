"""Benchmark: a broadcast to N customers against one workflow per customer, and a segment count over many profiles.

    .venv/bin/python -m bench.broadcast                       # 100,000 recipients, journeys on 1,000, 1M profiles
    .venv/bin/python -m bench.broadcast --customers 5000 --journey-customers 300 --profiles 200000   # quick
    .venv/bin/python -m bench.broadcast --customers 20000 --smtp-connections 1,4   # one broadcast per value

One process (plus the Temporal dev server and PostgreSQL it starts, fresh, in a temp dir): the SMTP sink, the
Parcours worker (``build_worker``; its pool has ``--pool`` connections) and the driver. Printed:

- broadcast: emails/s end to end (start of the workflow to the last 250 at the sink) and the worker process's RSS
  sampled every 10 % of the way (flat means the workflow keeps no per-recipient state); with ``--smtp-connections
  1,4`` one broadcast (fresh customers) per value of ``smtp_connections``, in this order, and their ratio to the first;
- journeys: the same email through one journey run per customer (one send step), emails/s, and the ratio;
- audience count: ``count_members`` of a two-condition segment over ``--profiles`` profiles, best of 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from temporalio.client import Client

from config.logging import configure_logging
from config.settings import Settings
from contracts.broadcast import BroadcastResult, broadcast_workflow_id
from contracts.journey import Event
from devstack.mailsink import SmtpSink
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import DevServer
from journeys import parse_journey
from journeys.broadcasts import Broadcast
from journeys.models import Audience
from orchestration.broadcasts import start_broadcast
from orchestration.runs import enter_journey
from store import broadcasts as broadcast_store
from store import create_pool, migrate
from store import segments as segment_store
from workers.worker import build_worker, channels_for

QUEUE = "bench-broadcast"


class CountingSink(SmtpSink):
    """The SMTP sink, counting accepted messages by distinct recipient (and the time the last new one arrived)
    without keeping them; ``copies``: messages to a recipient that had one already (a batch retried after its
    worker missed a heartbeat delivers its undecided sends once more, with the same Message-ID)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()
        self.copies = 0
        self.last = 0.0

    @property
    def count(self) -> int:
        return len(self.seen)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.seen:
                self.copies += 1
            else:
                self.seen.add(rcpt)
                self.last = time.perf_counter()
        return "250 OK"


@contextlib.asynccontextmanager
async def stack(workdir: Path, pool_size: int) -> AsyncIterator[tuple[Client, asyncpg.Pool, CountingSink, Settings]]:
    async with contextlib.AsyncExitStack() as exits:
        dev = DevServer(workdir / "temporal")
        postgres = EmbeddedPostgres(workdir / "postgres")
        client_task = asyncio.create_task(dev.start())
        exits.push_async_callback(dev.stop)
        await asyncio.to_thread(postgres.start)
        exits.callback(postgres.stop)
        url = await asyncio.to_thread(postgres.ensure_database, "parcours_bench")
        await migrate(url)
        client = await client_task
        sink = CountingSink()
        await sink.start()
        exits.push_async_callback(sink.stop)
        settings = Settings(
            task_queue=QUEUE,
            smtp_host=sink.host,
            smtp_port=sink.port,
            consent_default="opt_in",
            database_pool_max=pool_size,
            otel_exporter="none",
            log_level="WARNING",
            log_format="console",
        )
        pool = await create_pool(url, min_size=1, max_size=pool_size + 4)
        exits.push_async_callback(pool.close)
        channels = await exits.enter_async_context(channels_for(settings, pool))
        await exits.enter_async_context(build_worker(client, settings, pool, channels))
        yield client, pool, sink, settings


async def create_customers(pool: asyncpg.Pool, tag: str, n: int) -> list[str]:
    ids = [f"{tag}-{i:07d}" for i in range(n)]
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO customers (id, email, timezone, attributes)
               SELECT c, c || '@bench.example', 'Europe/Paris', jsonb_build_object('first_name', 'Ada', 'tag', $2::text)
                 FROM unnest($1::text[]) c""",
            ids,
            tag,
        )
        await conn.copy_records_to_table(
            "consent_events",
            records=[(c, "channel", "email", "granted", "bench") for c in ids],
            columns=["customer_id", "scope", "name", "status", "source"],
        )
    return ids


async def broadcast_run(client: Client, pool: asyncpg.Pool, sink: CountingSink, n: int) -> dict[str, Any]:
    tag = f"b{uuid.uuid4().hex[:6]}"
    await create_customers(pool, tag, n)
    broadcast = Broadcast.model_validate(
        {
            "id": tag,
            "segment": {"where": [{"field": "profile.tag", "op": "eq", "value": tag}]},
            "channel": "email",
            "template": {"subject": "Hello {{ customer.first_name }}", "text": "Winter sale: 20% off."},
            "batch_size": 1000,
        }
    )
    await broadcast_store.create_broadcast(pool, broadcast)
    process = psutil.Process()
    before, copies_before = sink.count, sink.copies
    rss: list[tuple[int, float]] = [(0, process.memory_info().rss / 2**20)]
    started = time.perf_counter()
    await start_broadcast(client, broadcast, task_queue=QUEUE)
    handle = client.get_workflow_handle(broadcast_workflow_id(broadcast.id), result_type=BroadcastResult)
    waiter = asyncio.create_task(handle.result())
    next_mark = n // 10
    while not waiter.done():
        await asyncio.sleep(0.2)
        done = sink.count - before
        if done >= next_mark and next_mark <= n:
            rss.append((done, process.memory_info().rss / 2**20))
            print(f"  broadcast {done:7d}/{n}  {time.perf_counter() - started:6.1f}s  rss {rss[-1][1]:6.0f} MB")
            next_mark += max(n // 10, 1)
    result = await waiter
    copies = sink.copies - copies_before
    elapsed = sink.last - started
    assert sink.count - before == n, (sink.count - before, result)
    sent = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE journey_id = $1 AND status = 'sent'", f"broadcast:{broadcast.id}"
    )
    assert sent == n, (sent, result)
    return {"emails": n, "seconds": elapsed, "emails_per_s": n / elapsed, "rss_mb": rss, "copies": copies}


async def journey_run(
    client: Client, pool: asyncpg.Pool, sink: CountingSink, settings: Settings, n: int
) -> dict[str, Any]:
    from store import journeys as journey_store

    tag = f"j{uuid.uuid4().hex[:6]}"
    ids = await create_customers(pool, tag, n)
    journey = parse_journey(
        {
            "id": tag,
            "name": "one email",
            "trigger": {"event": f"go-{tag}"},
            "steps": [
                {
                    "id": "hello",
                    "type": "send",
                    "channel": "email",
                    "template": {"subject": "Hello {{ customer.first_name }}", "text": "Winter sale: 20% off."},
                }
            ],
        }
    )
    await journey_store.publish(pool, journey)
    before = sink.count
    started = time.perf_counter()
    semaphore = asyncio.Semaphore(32)

    async def enter(customer_id: str) -> None:
        async with semaphore:
            trigger = Event(
                event_id=f"ev-{customer_id}",
                customer_id=customer_id,
                name=journey.trigger.event,
                occurred_at=datetime.now(UTC),
            )
            await enter_journey(client, journey, 1, trigger, task_queue=QUEUE)

    await asyncio.gather(*(enter(c) for c in ids))
    while sink.count - before < n:  # noqa: ASYNC110 - the sink counts in its own handler, no event to wait on
        await asyncio.sleep(0.05)
    elapsed = sink.last - started
    return {"emails": n, "seconds": elapsed, "emails_per_s": n / elapsed}


async def count_run(pool: asyncpg.Pool, profiles: int) -> dict[str, Any]:
    async with pool.acquire() as conn:
        have = await conn.fetchval("SELECT count(*) FROM customers")
        missing = max(0, profiles - int(have))
        began = time.perf_counter()
        await conn.execute(
            """INSERT INTO customers (id, email, attributes)
               SELECT 'p' || g, 'p' || g || '@bench.example',
                      jsonb_build_object('country', (ARRAY['FR','BE','DE','ES','IT'])[1 + g % 5],
                                         'plan', (ARRAY['free','pro','team'])[1 + g % 3], 'orders', g % 17)
                 FROM generate_series(1, $1::int) g""",
            missing,
        )
        await conn.execute("ANALYZE customers")
        print(f"  {missing} profiles inserted in {time.perf_counter() - began:.1f}s")
    audience = Audience.model_validate(
        {
            "where": [
                {"field": "profile.country", "op": "in", "value": ["FR", "BE"]},
                {"field": "profile.orders", "op": "gte", "value": 3},
            ]
        }
    )
    times, count = [], 0
    for _ in range(3):
        began = time.perf_counter()
        count = await segment_store.count_members(pool, audience, datetime.now(UTC))
        times.append(time.perf_counter() - began)
    return {"profiles": profiles, "members": count, "seconds_best": min(times), "seconds_all": times}


async def main(args: argparse.Namespace) -> None:
    configure_logging("WARNING", "console")
    with tempfile.TemporaryDirectory(prefix="parcours-bench-broadcast-") as tmp:
        async with stack(Path(tmp), args.pool) as (client, pool, sink, settings):
            runs: list[tuple[int, dict[str, Any]]] = []
            for connections in args.smtp_connections:
                # The worker's activities read the settings object at each batch.
                settings.smtp_connections = connections
                print(f"broadcast to {args.customers} customers (pool {args.pool}, {connections} SMTP connections)")
                runs.append((connections, await broadcast_run(client, pool, sink, args.customers)))
            broadcast = runs[-1][1]
            print(f"journeys: one workflow per customer, {args.journey_customers} customers")
            journeys = await journey_run(client, pool, sink, settings, args.journey_customers)
            print(f"audience count over {args.profiles} profiles")
            counted = await count_run(pool, args.profiles)
    ratio = broadcast["emails_per_s"] / journeys["emails_per_s"]
    rss = [mb for _, mb in broadcast["rss_mb"]]
    print()
    print("| measure | figure |")
    print("|---|---:|")
    baseline = runs[0][1]["emails_per_s"]
    for connections, run in runs:
        print(
            f"| broadcast emails/s ({run['emails']:,} recipients, end to end, {connections} SMTP connections) | "
            f"{run['emails_per_s']:,.0f} ({run['emails_per_s'] / baseline:.2f}x the first; "
            f"{run['copies']} second copies) |"
        )
    print(
        f"| journey path emails/s ({journeys['emails']:,} runs, one per customer) | {journeys['emails_per_s']:,.0f} |"
    )
    print(f"| broadcast (last) / journey path | {ratio:.1f}x |")
    print(f"| worker RSS during the broadcast (min / max MB, every 10 %) | {min(rss):.0f} / {max(rss):.0f} |")
    print(
        f"| audience count, {counted['profiles']:,} profiles ({counted['members']:,} members) | "
        f"{counted['seconds_best'] * 1000:,.0f} ms (best of 3) |"
    )


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--journey-customers", type=int, default=1_000)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--pool", type=int, default=20, help="worker database connections (broadcast sends: half)")
    parser.add_argument(
        "--smtp-connections",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[4],
        help="smtp_connections for the broadcast, or several (1,4): one broadcast each, in order",
    )
    asyncio.run(main(parser.parse_args(argv)))


if __name__ == "__main__":
    cli()
