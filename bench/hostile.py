"""Does hostile input block the event loop? ``/healthz`` latency with and without hostile publishes in flight.

    .venv/bin/python -m bench.hostile [--seconds 10] [--concurrency 8] [--validation processes|threads|both]

One process: embedded PostgreSQL, the Temporal dev server, the API under uvicorn on loopback.
Three phases of the same length, in this order, in the same run: (1) a prober alone asks ``GET /healthz`` as
fast as it can, one request at a time; (2) the same prober while ``--concurrency`` client processes post small
valid events (the control: what any load costs on a small machine); (3) the same while they post hostile bodies
(catastrophic-backtracking durations, YAML alias bombs, Liquid loops, deep nesting, NaN, huge integers, long
time zones, large valid journeys to validate). Prints p50/p99 of each phase, their ratio, and how the hostile
requests were answered (any 5xx is counted and shown).

``--validation`` picks where the API checks journeys and large bodies: ``processes`` (the default,
``PARCOURS_VALIDATION_PROCESSES``), ``threads`` (``PARCOURS_VALIDATION_PROCESSES=0``, the former way) or ``both``,
one after the other in the same run, with the ratio between them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from config.settings import Settings
from contracts import search_attributes as sa
from devstack.postgres import EmbeddedPostgres
from store import create_pool, migrate

KEY = "bench-key"


def hostile_requests() -> list[tuple[str, str, bytes, str]]:
    """(method, path, body, content type) of each kind of hostile request."""
    bomb = "id: bomb\nname: b\nx: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for level in "bcdefghij":
        bomb += f"{level}: &{level} [" + ", ".join([f"*{chr(ord(level) - 1)}"] * 9) + "]\n"

    def journey(steps: list[dict[str, Any]]) -> bytes:
        return json.dumps({"id": "h", "name": "h", "trigger": {"event": "e"}, "steps": steps}).encode()

    big_valid = journey(
        [
            {
                "id": f"s{i}",
                "type": "send",
                "channel": "email",
                "template": {"subject": "{{ customer.first_name | upcase }}", "html": "<p>{{ event.x }}</p>" * 40},
            }
            for i in range(150)
        ]
    )
    return [
        ("POST", "/v1/journeys", journey([{"id": "w", "type": "wait", "duration": "1" + " " * 95 + "x"}]), "json"),
        ("POST", "/v1/journeys", journey([{"id": "w", "type": "wait", "duration": "\t" * 98 + "1x"}]), "json"),
        ("POST", "/v1/journeys", bomb.encode(), "yaml"),
        (
            "POST",
            "/v1/journeys",
            journey(
                [
                    {
                        "id": "l",
                        "type": "send",
                        "channel": "sms",
                        "template": {"text": "{% for i in (1..100000000) %}xxxxxxxxxx{% endfor %}"},
                    }
                ]
            ),
            "json",
        ),
        ("POST", "/v1/journeys", big_valid, "json"),
        ("POST", "/v1/events", b"[" * 500_000 + b"]" * 500_000, "json"),
        ("POST", "/v1/events", b'{"customer_id": "c", "name": "n", "properties": {"x": NaN}}', "json"),
        (
            "POST",
            "/v1/events",
            b'{"customer_id": "c", "name": "n", "properties": {"x": ' + b"9" * 200_000 + b"}}",
            "json",
        ),
        ("PUT", "/v1/customers/c-hostile", json.dumps({"timezone": "A" * 100_000}).encode(), "json"),
    ]


@contextlib.asynccontextmanager
async def api_server(data: Path, *, processes: int = 2) -> AsyncIterator[str]:
    postgres = EmbeddedPostgres(data / "pg", fsync=False)
    await asyncio.to_thread(postgres.start)
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=list(sa.ALL),
    )
    pool = None
    try:
        url = await asyncio.to_thread(postgres.ensure_database, "bench_hostile")
        await migrate(url)
        pool = await create_pool(url)
        settings = Settings(
            api_keys=[KEY],
            otel_exporter="none",
            log_level="ERROR",
            task_queue="bench-hostile",
            validation_processes=processes,
        )
        app = create_app(settings, pool=pool, client=env.client)
        port = 18_000 + uuid.uuid4().int % 2000
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False, lifespan="on")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
            await asyncio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task
    finally:
        if pool is not None:
            await pool.close()
        await env.shutdown()
        await asyncio.to_thread(postgres.stop)


async def probe(base: str, seconds: float) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await client.get("/healthz")
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
    return latencies


async def attack(base: str, seconds: float, only: str) -> Counter[str]:
    answers: Counter[str] = Counter()
    requests = hostile_requests()
    if only == "ordinary":  # the control: as many clients, sending a small valid event each time
        requests = [("POST", "/v1/events", b'{"customer_id": "c-ordinary", "name": "page_viewed"}', "json")]
    elif only:
        requests = [requests[int(i)] for i in only.split(",")]
    types = {"json": "application/json", "yaml": "application/yaml"}
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=60, headers={"X-API-Key": KEY}) as client:
        index = os.getpid()
        while time.perf_counter() < deadline:
            method, path, body, kind = requests[index % len(requests)]
            index += 1
            response = await client.request(method, path, content=body, headers={"content-type": types[kind]})
            answers[f"{method} {path} -> {response.status_code}"] += 1
    return answers


def attacker(base: str, seconds: float, only: str, out: Any) -> None:
    """One hostile client, in a process of its own: the server's process only serves."""
    out.send(dict(asyncio.run(attack(base, seconds, only))))


async def under_load(base: str, seconds: float, concurrency: int, only: str) -> tuple[list[float], Counter[str]]:
    """Probe /healthz while ``concurrency`` client processes send ``only`` (hostile, or ``ordinary`` requests)."""
    answers: Counter[str] = Counter()
    context = multiprocessing.get_context("spawn")
    # One pipe per client (a Queue's named semaphore has been seen to vanish before a slow child opened it).
    pipes = [context.Pipe(duplex=False) for _ in range(concurrency)]
    attackers = [context.Process(target=attacker, args=(base, seconds + 3, only, sender)) for _, sender in pipes]
    for process in attackers:
        process.start()
    await asyncio.sleep(2)  # the clients have started and are sending
    latencies = await probe(base, seconds)
    for receiver, _ in pipes:
        if await asyncio.to_thread(receiver.poll, 120):
            answers.update(receiver.recv())
    for process in attackers:
        await asyncio.to_thread(process.join, 30)
    return latencies, answers


def summary(name: str, latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:<28} {len(ordered):>7} requests  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
    return p50, p99


async def measure(seconds: float, concurrency: int, only: str, processes: int) -> dict[str, Any]:
    """The three phases against one API whose validation runs in ``processes`` processes (0: threads)."""
    with tempfile.TemporaryDirectory(prefix="parcours-hostile-") as tmp:
        async with api_server(Path(tmp), processes=processes) as base:
            await probe(base, 1.0)  # warm up
            quiet = await probe(base, seconds)
            control, _ = await under_load(base, seconds, concurrency, "ordinary")
            loud, answers = await under_load(base, seconds, concurrency, only)
    return {"quiet": quiet, "control": control, "loud": loud, "answers": answers}


def report(mode: str, seconds: float, concurrency: int, run: dict[str, Any]) -> tuple[float, int]:
    """Print one mode's figures; (p99 hostile / p99 ordinary load, server errors)."""
    print(f"\n[{mode}] /healthz latency, {seconds:.0f} s per phase, {concurrency} client processes under load")
    p50_quiet, p99_quiet = summary("alone", run["quiet"])
    p50_control, p99_control = summary("with ordinary events", run["control"])
    p50_loud, p99_loud = summary("with hostile publishes", run["loud"])
    print(f"ratio (hostile / alone): p50 {p50_loud / p50_quiet:.2f}x, p99 {p99_loud / p99_quiet:.2f}x")
    print(f"ratio (hostile / ordinary load): p50 {p50_loud / p50_control:.2f}x, p99 {p99_loud / p99_control:.2f}x")
    answers: Counter[str] = run["answers"]
    errors = sum(count for answer, count in answers.items() if answer.rsplit(" ", 1)[1].startswith("5"))
    print(f"hostile requests answered: {sum(answers.values())}, server errors (5xx): {errors}")
    for answer, count in sorted(answers.items()):
        print(f"  {count:>6}  {answer}")
    return p99_loud / p99_control, errors


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--only", default="", help="comma-separated indexes of the hostile requests to send")
    parser.add_argument("--validation", choices=["processes", "threads", "both"], default="processes")
    args = parser.parse_args()
    modes = ["threads", "processes"] if args.validation == "both" else [args.validation]
    runs = {
        mode: await measure(args.seconds, args.concurrency, args.only, 2 if mode == "processes" else 0)
        for mode in modes
    }
    ratios, errors = {}, 0
    for mode, run in runs.items():
        ratios[mode], mode_errors = report(mode, args.seconds, args.concurrency, run)
        errors += mode_errors
    if len(ratios) == 2:
        print(
            f"\np99 hostile / ordinary load: threads {ratios['threads']:.2f}x, processes {ratios['processes']:.2f}x "
            f"(processes / threads: {ratios['processes'] / ratios['threads']:.2f}x)"
        )
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
