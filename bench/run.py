"""``python -m bench.run``: Parcours against bare Temporal on this machine. See bench/README.md.

Everything runs in this one process except the Temporal dev server (a child, SQLite file with WAL in a temp dir)
and PostgreSQL (embedded, its own temp cluster): the SMTP sink, the Parcours worker, the baseline worker, the API
(uvicorn on 127.0.0.1) and the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import uvicorn
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from api.app import create_app
from api.server import ApiServer
from bench.baseline import build_baseline_worker, signal_purchase, start_baseline
from bench.profile import Profiler
from config.logging import configure_logging
from config.settings import Settings
from devstack.mailsink import SmtpSink
from devstack.ports import free_port
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import DevServer
from journeys import parse_journey
from orchestration.visibility import runs_query
from store import create_pool, migrate
from store import journeys as journey_store
from workers.worker import build_worker, channels_for

API_KEY = "bench-key"
PARCOURS_QUEUE = "bench-parcours"
BASELINE_QUEUE = "bench-baseline"
TRIGGER, PURCHASE, NOISE, PARK = "bench_signup", "bench_purchase", "bench_pageview", "bench_park"

REFERENCE = {
    "id": "bench-reference",
    "name": "Benchmark reference",
    "trigger": {"event": TRIGGER},
    "goal": {"event": PURCHASE},
    "steps": [
        {
            "id": "welcome",
            "type": "send",
            "channel": "email",
            "template": {"subject": "Welcome {{ customer.first_name }}", "text": "Hello {{ customer.first_name }}!"},
        },
        {"id": "await-purchase", "type": "wait_for", "event": PURCHASE, "timeout": "1d"},
    ],
}
PARKED = {
    "id": "bench-parked",
    "name": "Benchmark parked",
    "trigger": {"event": PARK},
    "steps": [
        {"id": "park", "type": "wait", "duration": "30d"},
        {"id": "late-email", "type": "send", "channel": "email", "template": {"subject": "Hi", "text": "Later."}},
    ],
}


# --- measuring ----------------------------------------------------------------------------------------------


class RssSampler:
    """Samples this process's RSS every ``interval`` seconds; ``peak(label)`` per labelled phase."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.label = "setup"
        self.peaks: dict[str, int] = {}
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> int:
        return int(self._proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = self.now()
            if rss > self.peaks.get(self.label, 0):
                self.peaks[self.label] = rss


class TimedSink(SmtpSink):
    """The SMTP sink, noting when each recipient's message was accepted and telling the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted_at: dict[str, float] = {}
        self.on_accept: Callable[[str, float], None] | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        now = time.perf_counter()
        for rcpt in envelope.rcpt_tos:
            self.accepted_at[rcpt] = now
            if self.on_accept is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self.on_accept, rcpt, now)
        return reply


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "n": len(values), "max": ordered[-1]}


def customer_ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(n)]


def email_of(customer_id: str) -> str:
    return f"{customer_id}@bench.example"


def event(customer_id: str, name: str, **props: Any) -> dict[str, Any]:
    return {
        "event_id": f"ev-{uuid.uuid4().hex}",
        "customer_id": customer_id,
        "name": name,
        "properties": props,
        "occurred_at": datetime.now(UTC).isoformat(),
    }


async def bounded(n: int, items: list[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    semaphore = asyncio.Semaphore(n)

    async def one(item: Any) -> Any:
        async with semaphore:
            return await fn(item)

    return await asyncio.gather(*(one(i) for i in items))


# --- the stack ----------------------------------------------------------------------------------------------


@dataclass
class Bench:
    settings: Settings
    client: Client
    pool: asyncpg.Pool
    http: httpx.AsyncClient
    sink: TimedSink
    rss: RssSampler
    dev: DevServer
    results: dict[str, Any] = field(default_factory=dict)
    baseline_sent: dict[str, float] = field(default_factory=dict)
    baseline_waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    mail_waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)

    async def post(self, events: list[dict[str, Any]]) -> float:
        """POST a batch; return when the 202 arrived (perf_counter)."""
        for attempt in range(5):
            response = await self.http.post("/v1/events", json={"events": events} if len(events) > 1 else events[0])
            if response.status_code == 202:
                return time.perf_counter()
            await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"POST /v1/events: {response.status_code} {response.text[:200]}")

    def on_mail(self, rcpt: str, at: float) -> None:
        waiter = self.mail_waiters.pop(rcpt, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)

    def on_baseline_send(self, customer_id: str, at: float) -> None:
        self.baseline_sent[customer_id] = at
        waiter = self.baseline_waiters.pop(customer_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)

    def expect_mail(self, customer_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.mail_waiters[email_of(customer_id)] = future
        return future

    def expect_baseline_send(self, customer_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.baseline_waiters[customer_id] = future
        return future


async def create_customers(pool: asyncpg.Pool, ids: list[str]) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO customers (id, email, timezone, attributes)
            SELECT c, c || '@bench.example', 'Europe/Paris', '{"first_name": "Ada"}'::jsonb FROM unnest($1::text[]) c
            """,
            ids,
        )
        await conn.copy_records_to_table(
            "consent_events",
            records=[(c, "channel", "email", "granted", "bench") for c in ids],
            columns=["customer_id", "scope", "name", "status", "source"],
        )


@contextlib.asynccontextmanager
async def stack(workdir: Path, *, unsandboxed: bool = False) -> AsyncIterator[Bench]:
    rss = RssSampler()
    rss.start()
    async with contextlib.AsyncExitStack() as exits:
        exits.callback(rss.stop)
        dev = DevServer(workdir / "temporal")
        postgres = EmbeddedPostgres(workdir / "postgres")
        started = time.perf_counter()
        client_task = asyncio.create_task(dev.start())
        exits.push_async_callback(dev.stop)
        await asyncio.to_thread(postgres.start)
        exits.callback(postgres.stop)
        url = await asyncio.to_thread(postgres.ensure_database, "parcours_bench")
        await migrate(url)
        client = await client_task
        print(f"dev server and PostgreSQL up in {time.perf_counter() - started:.1f}s (SQLite {dev.db_file})")

        sink = TimedSink()
        await sink.start()
        exits.push_async_callback(sink.stop)
        settings = Settings(
            task_queue=PARCOURS_QUEUE,
            smtp_host=sink.host,
            smtp_port=sink.port,
            consent_default="opt_in",
            api_keys=[API_KEY],
            otel_exporter="none",
            log_level="WARNING",
            log_format="console",
        )
        # The worker and the API get a pool each, as separate processes would.
        worker_pool = await create_pool(url, min_size=1, max_size=settings.database_pool_max)
        exits.push_async_callback(worker_pool.close)
        api_pool = await create_pool(url, min_size=1, max_size=settings.database_pool_max)
        exits.push_async_callback(api_pool.close)
        await journey_store.publish(api_pool, parse_journey(REFERENCE))
        await journey_store.publish(api_pool, parse_journey(PARKED))

        bench = Bench(settings, client, api_pool, None, sink, rss, dev)  # type: ignore[arg-type]
        sink.on_accept = bench.on_mail

        channels = await exits.enter_async_context(channels_for(settings, worker_pool))
        # --unsandboxed, measurement only: what the workflow sandbox costs.
        worker = build_worker(client, settings, worker_pool, channels, sandboxed=not unsandboxed)
        await exits.enter_async_context(worker)
        await exits.enter_async_context(build_baseline_worker(client, BASELINE_QUEUE, bench.on_baseline_send))

        port = free_port()
        app = create_app(settings, pool=api_pool, client=client)
        server = ApiServer(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
        )
        serving = asyncio.create_task(server.serve())

        async def stop_api() -> None:
            server.should_exit = True
            await serving

        exits.push_async_callback(stop_api)
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
            await asyncio.sleep(0.05)
        bench.http = await exits.enter_async_context(
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"X-API-Key": API_KEY},
                timeout=60,
                limits=httpx.Limits(max_connections=32),
            )
        )
        yield bench


# --- journeys mode ------------------------------------------------------------------------------------------


async def parcours_round(bench: Bench, ids: list[str], batch: int = 100) -> float:
    """Enter ``ids`` over HTTP, post each one's purchase once its email arrived, wait for every run to end."""
    started = time.perf_counter()
    mails = {c: bench.expect_mail(c) for c in ids}
    purchases: asyncio.Queue[str] = asyncio.Queue()
    for c, future in mails.items():
        future.add_done_callback(lambda _f, c=c: purchases.put_nowait(c))

    async def post_purchases() -> None:
        left = len(ids)
        while left:
            first = await purchases.get()
            await asyncio.sleep(0.02)
            chunk = [first]
            while not purchases.empty() and len(chunk) < 500:
                chunk.append(purchases.get_nowait())
            left -= len(chunk)
            await bench.post([event(c, PURCHASE, total=10) for c in chunk])

    poster = asyncio.create_task(post_purchases())
    chunks = [ids[i : i + batch] for i in range(0, len(ids), batch)]
    await bounded(4, chunks, lambda chunk: bench.post([event(c, TRIGGER) for c in chunk]))
    await poster
    await bounded(200, ids, lambda c: bench.client.get_workflow_handle(f"{REFERENCE['id']}:{c}").result())
    return time.perf_counter() - started


async def baseline_round(bench: Bench, ids: list[str]) -> float:
    started = time.perf_counter()
    sends = {c: bench.expect_baseline_send(c) for c in ids}
    purchases: asyncio.Queue[str] = asyncio.Queue()
    for c, future in sends.items():
        future.add_done_callback(lambda _f, c=c: purchases.put_nowait(c))

    async def signal_purchases() -> None:
        semaphore = asyncio.Semaphore(16)

        async def one(c: str) -> None:
            async with semaphore:
                await signal_purchase(bench.client, c)

        tasks = [asyncio.create_task(one(await purchases.get())) for _ in ids]
        await asyncio.gather(*tasks)

    signaller = asyncio.create_task(signal_purchases())
    await bounded(16, ids, lambda c: start_baseline(bench.client, BASELINE_QUEUE, c))
    await signaller
    await bounded(200, ids, lambda c: bench.client.get_workflow_handle(f"baseline:{c}").result())
    return time.perf_counter() - started


async def ingestion(bench: Bench, customers: list[str], batches: int, size: int, concurrency: int = 4) -> float:
    payloads = [
        [event(customers[(b * size + i) % len(customers)], NOISE, page=i) for i in range(size)] for b in range(batches)
    ]
    started = time.perf_counter()
    await bounded(concurrency, payloads, bench.post)
    return batches * size / (time.perf_counter() - started)


async def paced_latency(
    bench: Bench, ids: list[str], rate: float, *, parcours: bool
) -> tuple[list[float], list[float]]:
    """One entry every 1/rate s; (accepted -> delivered, posted -> delivered) in ms per customer."""
    from_accept: list[float] = []
    from_post: list[float] = []

    async def one(c: str) -> None:
        delivered = bench.expect_mail(c) if parcours else bench.expect_baseline_send(c)
        posted = time.perf_counter()
        if parcours:
            accepted = await bench.post([event(c, TRIGGER)])
        else:
            await start_baseline(bench.client, BASELINE_QUEUE, c)
            accepted = time.perf_counter()
        at = await asyncio.wait_for(delivered, 60)
        from_accept.append((at - accepted) * 1000)
        from_post.append((at - posted) * 1000)
        if parcours:
            await bench.post([event(c, PURCHASE)])
        else:
            await signal_purchase(bench.client, c)

    tasks = []
    start = time.perf_counter()
    for i, c in enumerate(ids):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(c)))
    await asyncio.gather(*tasks)
    return from_accept, from_post


async def journeys_mode(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    n, rounds = args.customers, args.rounds
    per_round = max(1, n // rounds)
    p_ids = customer_ids("p", per_round * rounds)
    b_ids = customer_ids("b", per_round * rounds)
    lat_n = args.latency_events
    lat_p, lat_b = customer_ids("lp", lat_n), customer_ids("lb", lat_n)
    noise = customer_ids("n", 1000)
    prof_ids = customer_ids("prof", args.profile_customers)
    await create_customers(bench.pool, p_ids + lat_p + noise + prof_ids)

    # Warm up both paths (imports, pools, sticky caches) so round 1 is not special.
    await parcours_round(bench, await _warm_ids(bench, "wp", 20))
    await baseline_round(bench, customer_ids("wb", 20))

    times = {"parcours": 0.0, "baseline": 0.0}
    for r in range(rounds):
        chunk = slice(r * per_round, (r + 1) * per_round)
        for name in ("parcours", "baseline") if r % 2 == 0 else ("baseline", "parcours"):
            bench.rss.label = name
            gc.collect()
            if name == "parcours":
                elapsed = await parcours_round(bench, p_ids[chunk])
            else:
                elapsed = await baseline_round(bench, b_ids[chunk])
            times[name] += elapsed
            print(
                f"  round {r + 1}/{rounds} {name:9s} {per_round} journeys in {elapsed:6.2f}s "
                f"({per_round / elapsed:6.1f}/s)"
            )

    # Latency before ingestion: 50,000 stored events leave PostgreSQL checkpointing for a while after.
    bench.rss.label = "latency-parcours"
    p_accept, p_post = await paced_latency(bench, lat_p, args.rate, parcours=True)
    bench.rss.label = "latency-baseline"
    b_accept, b_post = await paced_latency(bench, lat_b, args.rate, parcours=False)

    bench.rss.label = "ingestion"
    await ingestion(bench, noise, 5, args.batch_size)  # warm-up
    ingest_rate = await ingestion(bench, noise, args.batches, args.batch_size)
    print(f"  ingestion {args.batches} x {args.batch_size} events: {ingest_rate:.0f} events/s")

    profile: dict[str, Any] | None = None
    if args.profile:
        bench.rss.label = "profile"
        profiler = Profiler(Path(args.profile))
        if profiler.available():
            with profiler:
                await parcours_round(bench, prof_ids)
                await ingestion(bench, noise, 20, args.batch_size)
                await paced_latency(bench, await _warm_ids(bench, "pl", 100), args.rate, parcours=True)
            profile = profiler.summary()
        else:
            print("  (py-spy not installed: no profile; pip install py-spy)")

    total = per_round * rounds
    result = {
        "customers": total,
        "rounds": rounds,
        "parcours": {
            "journeys_per_s": total / times["parcours"],
            "seconds": times["parcours"],
            "ingest_events_per_s": ingest_rate,
            "latency_ms_from_accept": percentiles(p_accept),
            "latency_ms_from_post": percentiles(p_post),
            "peak_rss_mb": bench.rss.peaks.get("parcours", 0) / 2**20,
        },
        "baseline": {
            "journeys_per_s": total / times["baseline"],
            "seconds": times["baseline"],
            "latency_ms_from_accept": percentiles(b_accept),
            "latency_ms_from_post": percentiles(b_post),
            "peak_rss_mb": bench.rss.peaks.get("baseline", 0) / 2**20,
        },
        "rss_peaks_mb": {k: v / 2**20 for k, v in bench.rss.peaks.items()},
    }
    if profile is not None:
        result["profile"] = profile
    return result


async def _warm_ids(bench: Bench, prefix: str, n: int) -> list[str]:
    ids = customer_ids(f"{prefix}{uuid.uuid4().hex[:4]}", n)
    await create_customers(bench.pool, ids)
    return ids


# --- parked mode --------------------------------------------------------------------------------------------


async def backlog(client: Client, queue: str, unknown: int = 10**9) -> int:
    """The workflow task backlog of ``queue``; ``unknown`` when the server does not answer in time (busy)."""
    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                include_task_queue_status=True,
            ),
            timeout=timedelta(seconds=10),
        )
    except RPCError as exc:
        print(f"  (describe_task_queue: {exc}; retrying)")
        return unknown
    return int(response.task_queue_status.backlog_count_hint)


async def parked_mode(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    m, batch = args.parked, args.batch_size
    ids = customer_ids("park", m)
    await create_customers(bench.pool, ids)
    gc.collect()
    await asyncio.sleep(1)
    bench.rss.label = "parked"
    before = bench.rss.now()
    checkpoints: list[dict[str, float]] = []
    posts: list[float] = []
    started = time.perf_counter()
    for i in range(0, m, batch):
        t = time.perf_counter()
        await bench.post([event(c, PARK) for c in ids[i : i + batch]])
        posts.append(time.perf_counter() - t)
        # Pace: never more than ~max_backlog first workflow tasks waiting for the worker.
        while (pending := await backlog(bench.client, PARCOURS_QUEUE)) > args.max_backlog:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        done = min(i + batch, m)
        if done % max(batch, m // 10) == 0 or done == m:
            point = {
                "started": done,
                "seconds": time.perf_counter() - started,
                "rss_mb": bench.rss.now() / 2**20,
                "backlog": pending,
                "post_ms_last_batch": posts[-1] * 1000,
            }
            checkpoints.append(point)
            print(
                f"  parked {done:6d}/{m}  {point['seconds']:6.1f}s  rss {point['rss_mb']:6.0f} MB  "
                f"backlog {pending}  batch POST {point['post_ms_last_batch']:.0f} ms"
            )
    while await backlog(bench.client, PARCOURS_QUEUE) > 0:  # noqa: ASYNC110 - polling the server
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    gc.collect()
    await asyncio.sleep(5)
    after = bench.rss.now()
    count = await bench.client.count_workflows(runs_query(journey_id=PARKED["id"], running=True))
    dev_rss = psutil.Process(bench.dev.pid).memory_info().rss if bench.dev.pid else 0
    return {
        "parked": m,
        "running_in_visibility": count.count,
        "start_seconds": elapsed,
        "starts_per_s": m / elapsed,
        "batch_post_ms": percentiles([p * 1000 for p in posts]),
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "rss_peak_mb": bench.rss.peaks.get("parked", 0) / 2**20,
        "dev_server_rss_mb": dev_rss / 2**20,
        "sqlite_mb": _size_mb(bench.dev.db_file),
        "checkpoints": checkpoints,
    }


def _size_mb(db_file: Path) -> float:
    return sum(p.stat().st_size for p in db_file.parent.glob(db_file.name + "*")) / 2**20


# --- output -------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def table(result: dict[str, Any]) -> str:
    lines: list[str] = []
    if "parcours" in result:
        p, b = result["parcours"], result["baseline"]

        def row(name: str, pv: float | None, bv: float | None, fmt: str = "{:.1f}") -> None:
            ratio = f"{pv / bv:.2f}" if pv is not None and bv else "-"
            lines.append(
                f"| {name} | {fmt.format(pv) if pv is not None else '-'} | "
                f"{fmt.format(bv) if bv is not None else '-'} | {ratio} |"
            )

        lines += ["| measure | Parcours | baseline | Parcours/baseline |", "|---|---:|---:|---:|"]
        row(f"completed journeys/s ({result['customers']} each)", p["journeys_per_s"], b["journeys_per_s"])
        row("events/s accepted over HTTP (batches)", p["ingest_events_per_s"], None, "{:.0f}")
        for q in ("p50", "p95", "p99"):
            row(f"event-to-email {q} ms (from 202)", p["latency_ms_from_accept"][q], b["latency_ms_from_accept"][q])
        for q in ("p50", "p99"):
            row(f"event-to-email {q} ms (from POST)", p["latency_ms_from_post"][q], b["latency_ms_from_post"][q])
        row("peak RSS MB (one process)", p["peak_rss_mb"], b["peak_rss_mb"], "{:.0f}")
    if "parked" in result:
        k = result["parked"]
        lines += [
            "",
            "| parked | value |",
            "|---|---:|",
            f"| customers parked (running in visibility) | {k['parked']} ({k['running_in_visibility']}) |",
            f"| starts took | {k['start_seconds']:.0f} s ({k['starts_per_s']:.0f}/s) |",
            f"| batch POST p50/p99 ms | {k['batch_post_ms']['p50']:.0f} / {k['batch_post_ms']['p99']:.0f} |",
            f"| RSS before / after / peak MB | {k['rss_before_mb']:.0f} / {k['rss_after_mb']:.0f} / "
            f"{k['rss_peak_mb']:.0f} |",
            f"| dev server RSS MB, SQLite MB | {k['dev_server_rss_mb']:.0f}, {k['sqlite_mb']:.0f} |",
        ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("WARNING", "console")
    workdir = Path(tempfile.mkdtemp(prefix="parcours-bench-"))
    result: dict[str, Any] = {"machine": machine(), "args": vars(args), "started_at": datetime.now(UTC).isoformat()}
    try:
        async with stack(workdir, unsandboxed=args.unsandboxed) as bench:
            if args.mode == "journeys":
                result.update(await journeys_mode(bench, args))
            else:
                result["parked"] = await parked_mode(bench, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--mode", choices=["journeys", "parked"], default="journeys")
    parser.add_argument("--customers", type=int, default=1000, help="journeys per system (journeys mode)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per system")
    parser.add_argument("--batches", type=int, default=100, help="ingestion: number of batches")
    parser.add_argument("--batch-size", type=int, default=500, help="ingestion and parked starts: events per POST")
    parser.add_argument("--rate", type=float, default=20.0, help="latency: events per second")
    parser.add_argument("--latency-events", type=int, default=200, help="latency: entries per system")
    parser.add_argument("--parked", type=int, default=20000, help="parked mode: customers")
    parser.add_argument("--max-backlog", type=int, default=500, help="parked mode: pace to this workflow backlog")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the process during an extra Parcours pass")
    parser.add_argument("--profile-customers", type=int, default=300)
    parser.add_argument(
        "--unsandboxed",
        action="store_true",
        help="measurement only: run Parcours' workflows without the sandbox (the baseline keeps it)",
    )
    parser.add_argument("--out", help="write the JSON here (e.g. bench/results/NAME.json)")
    return parser.parse_args(argv)


def cli(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(main(args))
    print()
    print(table(result))
    if "profile" in result:
        print()
        print(result["profile"]["text"])
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
        print(f"\nwrote {out}")


__all__ = ["cli", "signal", "statistics", "subprocess", "sys"]

if __name__ == "__main__":
    cli()
