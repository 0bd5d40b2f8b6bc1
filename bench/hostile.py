"""Does hostile input block the event loop? ``/healthz`` latency with and without hostile publishes in flight.

    .venv/bin/python -m bench.hostile [--seconds 10] [--concurrency 8]

One process: embedded PostgreSQL, the time-skipping Temporal test server, the API under uvicorn on loopback.
Two phases of the same length, in this order, in the same run: (1) a prober alone asks ``GET /healthz`` as fast
as it can, one request at a time; (2) the same prober while ``--concurrency`` clients keep posting hostile bodies
(catastrophic-backtracking durations, YAML alias bombs, Liquid loops, deep nesting, NaN, huge integers, long
time zones, large valid journeys to validate). Prints p50/p99 of each phase, their ratio, and how the hostile
requests were answered (any 5xx is counted and shown).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
async def api_server(data: Path) -> AsyncIterator[str]:
    postgres = EmbeddedPostgres(data / "pg", fsync=False)
    await asyncio.to_thread(postgres.start)
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(Path(sys.executable).parent / "temporal-test-server"),
    )
    pool = None
    try:
        url = await asyncio.to_thread(postgres.ensure_database, "bench_hostile")
        await migrate(url)
        pool = await create_pool(url)
        settings = Settings(api_keys=[KEY], otel_exporter="none", log_level="ERROR", task_queue="bench-hostile")
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


async def attack(base: str, stop: asyncio.Event, answers: Counter[str]) -> None:
    requests = hostile_requests()
    types = {"json": "application/json", "yaml": "application/yaml"}
    async with httpx.AsyncClient(base_url=base, timeout=60, headers={"X-API-Key": KEY}) as client:
        index = 0
        while not stop.is_set():
            method, path, body, kind = requests[index % len(requests)]
            index += 1
            response = await client.request(method, path, content=body, headers={"content-type": types[kind]})
            answers[f"{method} {path} -> {response.status_code}"] += 1


def summary(name: str, latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:<28} {len(ordered):>7} requests  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
    return p50, p99


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parcours-hostile-") as tmp:
        async with api_server(Path(tmp)) as base:
            await probe(base, 1.0)  # warm up
            quiet = await probe(base, args.seconds)
            answers: Counter[str] = Counter()
            stop = asyncio.Event()
            attackers = [asyncio.create_task(attack(base, stop, answers)) for _ in range(args.concurrency)]
            await asyncio.sleep(0.5)
            loud = await probe(base, args.seconds)
            stop.set()
            await asyncio.gather(*attackers)
    print(f"/healthz latency, {args.seconds:.0f} s per phase, {args.concurrency} hostile clients in phase 2")
    p50_quiet, p99_quiet = summary("alone", quiet)
    p50_loud, p99_loud = summary("with hostile publishes", loud)
    print(f"ratio (hostile / alone): p50 {p50_loud / p50_quiet:.2f}x, p99 {p99_loud / p99_quiet:.2f}x")
    errors = sum(count for answer, count in answers.items() if answer.rsplit(" ", 1)[1].startswith("5"))
    print(f"hostile requests answered: {sum(answers.values())}, server errors (5xx): {errors}")
    for answer, count in sorted(answers.items()):
        print(f"  {count:>6}  {answer}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
