"""Benchmark: a broadcast to N customers against one workflow per customer, and a segment count over many profiles.

    .venv/bin/python -m bench.broadcast                       # 100,000 recipients, journeys on 1,000, 1M profiles
    .venv/bin/python -m bench.broadcast --customers 5000 --journey-customers 300 --profiles 200000   # quick
    .venv/bin/python -m bench.broadcast --customers 20000 --workers 1,2   # one broadcast per number of workers
    .venv/bin/python -m bench.broadcast --customers 20000 --smtp-connections 1,4   # one broadcast per value
    .venv/bin/python -m bench.broadcast --customers 20000 --workers 1 --pipelining on,off --warmup 5000

Processes, as in a deployment: the Temporal dev server and PostgreSQL (fresh, in a temp dir), the SMTP sink (its own
process: a mail server is another program; it advertises PIPELINING as Postfix, Exim or SES do, unless
``--pipelining off``), ``--workers`` Parcours workers (``python -m workers``, each with a pool
of ``--pool`` connections, on one task queue) and this driver. ``--workers 0`` runs one worker inside the driver's
process instead (the old topology, for comparison). Printed:

- broadcast: emails/s end to end (start of the workflow to the last 250 at the sink), the largest worker RSS
  sampled every 10 % of the way (flat means the workflow keeps no per-recipient state), and the CPU time per email
  of the workers and of the sink (what the load average does not change much); one broadcast (fresh
  customers) per value of ``--workers``, of ``--smtp-connections`` and of ``--pipelining``, in this order, and
  their ratio to the first (``--warmup N``: one broadcast to N customers before them, not counted, as the first
  broadcast on a fresh stack is slower whatever its configuration);
- journeys: the same email through one journey run per customer (one send step), with the last configuration's
  workers, emails/s, and the ratio;
- audience count: ``count_members`` of a two-condition segment over ``--profiles`` profiles, best of 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from config.logging import configure_logging
from config.settings import Settings
from contracts.broadcast import BroadcastResult, broadcast_workflow_id
from contracts.journey import Event
from devstack.ports import free_port
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
ROOT = str(Path(__file__).resolve().parent.parent)


class _Counter:
    """The sink's aiosmtpd handler: counts accepted messages by distinct recipient (and the time the last new one
    arrived, ``time.monotonic()``: one clock for every process) into shared memory, without keeping them;
    ``copies``: messages to a recipient that had one already (a batch retried after its worker missed a heartbeat
    delivers its undecided sends once more, with the same Message-ID). Advertises PIPELINING in its EHLO answer
    while the shared ``pipelining`` flag is set (sessions opened after a change see it)."""

    def __init__(self, count: Any, copies: Any, last: Any, pipelining: Any) -> None:
        self.seen: set[str] = set()
        self.count, self.copies, self.last, self.pipelining = count, copies, last, pipelining

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> Any:
        session.host_name = hostname
        if not self.pipelining.value:
            return responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.seen:
                self.copies.value += 1
            else:
                self.seen.add(rcpt)
                self.count.value += 1
                self.last.value = time.monotonic()
        return "250 OK"


def _serve_sink(host: str, port: int, count: Any, copies: Any, last: Any, pipelining: Any) -> None:
    """The sink process: an aiosmtpd server on ``host:port`` until it is terminated."""
    from aiosmtpd.smtp import SMTP

    async def serve() -> None:
        handler = _Counter(count, copies, last, pipelining)
        server = await asyncio.get_running_loop().create_server(lambda: SMTP(handler, hostname=host), host, port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


class SinkProcess:
    """The counting SMTP sink in a process of its own; ``count``, ``copies`` and ``last`` read its shared counters,
    ``pipelining`` says whether it advertises PIPELINING to the sessions opened from then on."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, free_port(host)
        context = multiprocessing.get_context("spawn")
        self._count, self._copies = context.RawValue(ctypes.c_long, 0), context.RawValue(ctypes.c_long, 0)
        self._last = context.RawValue(ctypes.c_double, 0.0)
        self._pipelining = context.RawValue(ctypes.c_bool, True)
        self._process = context.Process(
            target=_serve_sink,
            args=(host, self.port, self._count, self._copies, self._last, self._pipelining),
            daemon=True,
        )

    @property
    def pipelining(self) -> bool:
        return bool(self._pipelining.value)

    @pipelining.setter
    def pipelining(self, on: bool) -> None:
        self._pipelining.value = on

    @property
    def process(self) -> psutil.Process:
        assert self._process.pid is not None
        return psutil.Process(self._process.pid)

    @property
    def count(self) -> int:
        return int(self._count.value)

    @property
    def copies(self) -> int:
        return int(self._copies.value)

    @property
    def last(self) -> float:
        return float(self._last.value)

    async def start(self) -> None:
        self._process.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return

    async def stop(self) -> None:
        self._process.terminate()
        await asyncio.to_thread(self._process.join, 10)


class Workers:
    """``python -m workers`` processes on the bench's task queue, started and stopped together."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self._env, self._logs = env, logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, n: int, **settings: Any) -> list[int]:
        env = {**self._env, **{f"PARCOURS_{k.upper()}": str(v) for k, v in settings.items()}}
        for _ in range(n):
            log = (self._logs / f"worker-{len(self.processes)}.log").open("ab")
            self.processes.append(
                subprocess.Popen([sys.executable, "-m", "workers"], env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        for p in self.processes:
            p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.processes = []


@dataclass
class Stack:
    client: Client
    pool: asyncpg.Pool
    sink: SinkProcess
    settings: Settings
    """The workers' settings (``smtp_connections`` and the rest)."""
    url: str
    address: str
    """The Temporal server's."""
    workdir: Path


@contextlib.asynccontextmanager
async def stack(workdir: Path, pool_size: int) -> AsyncIterator[Stack]:
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
        sink = SinkProcess()
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
        pool = await create_pool(url, min_size=1, max_size=8)
        exits.push_async_callback(pool.close)
        yield Stack(client, pool, sink, settings, url, dev.address, workdir)


@contextlib.asynccontextmanager
async def workers(at: Stack, n: int) -> AsyncIterator[list[psutil.Process]]:
    """``n`` worker processes with ``at.settings`` (0: one worker in this process); their processes."""
    s = at.settings
    if n == 0:
        pool = await create_pool(at.url, min_size=1, max_size=s.database_pool_max + 4)
        try:
            async with channels_for(s, pool) as channels, build_worker(at.client, s, pool, channels):
                yield [psutil.Process()]
        finally:
            await pool.close()
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARCOURS_", "TEMPORAL_"))}
    env["PYTHONPATH"] = ROOT
    group = Workers(env, at.workdir)
    pids = group.start(
        n,
        temporal_address=at.address,
        database_url=at.url,
        task_queue=s.task_queue,
        smtp_host=s.smtp_host,
        smtp_port=s.smtp_port,
        smtp_connections=s.smtp_connections,
        consent_default=s.consent_default,
        database_pool_max=s.database_pool_max,
        otel_exporter="none",
        log_level="WARNING",
    )
    try:
        await _polling(at.client, n)
        yield [psutil.Process(pid) for pid in pids]
    finally:
        await asyncio.to_thread(group.stop)


async def _polling(client: Client, n: int) -> None:
    """Wait until ``n`` workers poll the bench's activity queue (started processes take seconds to import and
    connect; the broadcast's clock starts when they are ready). Pollers of stopped workers linger in the server's
    answer for a while, so the count is of pollers seen in the last second."""
    deadline = time.monotonic() + 120
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=QUEUE),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    )
    while time.monotonic() < deadline:
        answer = await client.workflow_service.describe_task_queue(request)
        now = time.time()
        if sum(1 for p in answer.pollers if now - p.last_access_time.ToSeconds() < 1.5) >= n:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{n} workers did not start polling {QUEUE}")


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


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    """CPU time (user and system) the processes have used so far: with the driver's share when the worker runs in
    this process (``--workers 0``)."""
    return sum(t.user + t.system for t in (p.cpu_times() for p in processes))


def _rss_mb(processes: list[psutil.Process]) -> float:
    """The largest RSS among the worker processes."""
    return max(p.memory_info().rss for p in processes) / 2**20


async def broadcast_run(
    client: Client, pool: asyncpg.Pool, sink: SinkProcess, processes: list[psutil.Process], n: int
) -> dict[str, Any]:
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
    before, copies_before = sink.count, sink.copies
    cpu_before = _cpu_seconds(processes), _cpu_seconds([sink.process])
    rss: list[tuple[int, float]] = [(0, _rss_mb(processes))]
    started = time.monotonic()
    await start_broadcast(client, broadcast, task_queue=QUEUE)
    handle = client.get_workflow_handle(broadcast_workflow_id(broadcast.id), result_type=BroadcastResult)
    waiter = asyncio.create_task(handle.result())
    next_mark = n // 10
    while not waiter.done():
        await asyncio.sleep(0.2)
        done = sink.count - before
        if done >= next_mark and next_mark <= n:
            rss.append((done, _rss_mb(processes)))
            print(f"  broadcast {done:7d}/{n}  {time.monotonic() - started:6.1f}s  rss {rss[-1][1]:6.0f} MB")
            next_mark += max(n // 10, 1)
    result = await waiter
    worker_cpu = _cpu_seconds(processes) - cpu_before[0]
    sink_cpu = _cpu_seconds([sink.process]) - cpu_before[1]
    copies = sink.copies - copies_before
    elapsed = sink.last - started
    assert sink.count - before == n, (sink.count - before, result)
    sent = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE journey_id = $1 AND status = 'sent'", f"broadcast:{broadcast.id}"
    )
    assert sent == n, (sent, result)
    return {
        "emails": n,
        "seconds": elapsed,
        "emails_per_s": n / elapsed,
        "rss_mb": rss,
        "copies": copies,
        "worker_cpu_ms": worker_cpu * 1000 / n,
        "sink_cpu_ms": sink_cpu * 1000 / n,
    }


async def journey_run(client: Client, pool: asyncpg.Pool, sink: SinkProcess, n: int) -> dict[str, Any]:
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
    started = time.monotonic()
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
        async with stack(Path(tmp), args.pool) as at:
            runs: list[tuple[str, dict[str, Any]]] = []
            journeys: dict[str, Any] = {}
            configurations = [(w, c, p) for w in args.workers for c in args.smtp_connections for p in args.pipelining]
            if args.warmup:
                # The first broadcast on a fresh stack runs slower than the next ones (new tables, a cold server):
                # without this, whichever configuration comes first pays for it.
                n_workers, at.settings.smtp_connections, at.sink.pipelining = configurations[0]
                print(f"warm-up broadcast to {args.warmup} customers (not counted)")
                async with workers(at, n_workers) as processes:
                    warm = await broadcast_run(at.client, at.pool, at.sink, processes, args.warmup)
                print(f"  warm-up: {warm['emails_per_s']:,.0f} emails/s")
            for i, (n_workers, connections, pipelining) in enumerate(configurations):
                at.settings.smtp_connections = connections
                at.sink.pipelining = pipelining  # the workers start after this: their sessions see the new EHLO
                who = f"{n_workers} worker process{'es' if n_workers != 1 else ''}"
                label = (
                    (who if n_workers else "in-process worker")
                    + f", {connections} SMTP connections each"
                    + (", PIPELINING" if pipelining else ", no PIPELINING")
                )
                print(f"broadcast to {args.customers} customers ({label}, pool {args.pool})")
                async with workers(at, n_workers) as processes:
                    runs.append((label, await broadcast_run(at.client, at.pool, at.sink, processes, args.customers)))
                    if i == len(configurations) - 1:
                        print(f"journeys: one workflow per customer, {args.journey_customers} customers ({label})")
                        journeys = await journey_run(at.client, at.pool, at.sink, args.journey_customers)
            print(f"audience count over {args.profiles} profiles")
            counted = await count_run(at.pool, args.profiles)
    print()
    print("| measure | figure |")
    print("|---|---:|")
    baseline = runs[0][1]["emails_per_s"]
    for label, run in runs:
        rss = [mb for _, mb in run["rss_mb"]]
        print(
            f"| broadcast emails/s ({run['emails']:,} recipients, end to end, {label}) | "
            f"{run['emails_per_s']:,.0f} ({run['emails_per_s'] / baseline:.2f}x the first; "
            f"{run['emails_per_s'] / journeys['emails_per_s']:.1f}x the journey path; "
            f"{run['copies']} second copies; worker RSS {min(rss):.0f} to {max(rss):.0f} MB; CPU per email: "
            f"workers {run['worker_cpu_ms']:.2f} ms, sink {run['sink_cpu_ms']:.2f} ms) |"
        )
    print(
        f"| journey path emails/s ({journeys['emails']:,} runs, one per customer, last configuration) | "
        f"{journeys['emails_per_s']:,.0f} |"
    )
    print(
        f"| audience count, {counted['profiles']:,} profiles ({counted['members']:,} members) | "
        f"{counted['seconds_best'] * 1000:,.0f} ms (best of 3) |"
    )


def _numbers(text: str) -> list[int]:
    return [int(n) for n in text.split(",")]


def _switches(text: str) -> list[bool]:
    values = {"on": True, "off": False}
    try:
        return [values[v.strip().lower()] for v in text.split(",")]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected on, off or both (on,off), got {text!r}") from None


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--journey-customers", type=int, default=1_000)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--pool", type=int, default=20, help="worker database connections (broadcast sends: half)")
    parser.add_argument(
        "--smtp-connections",
        type=_numbers,
        default=[4],
        help="smtp_connections for the broadcast, or several (1,4): one broadcast each, in order",
    )
    parser.add_argument(
        "--workers",
        type=_numbers,
        default=[1, 2],
        help="worker processes for the broadcast, or several (1,2): one broadcast each, in order; 0: in this process",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="a broadcast to this many customers first, with the first configuration, not counted (0: none)",
    )
    parser.add_argument(
        "--pipelining",
        type=_switches,
        default=[True],
        help="whether the sink advertises PIPELINING (on), or several (on,off): one broadcast each, in order",
    )
    asyncio.run(main(parser.parse_args(argv)))


if __name__ == "__main__":
    cli()
