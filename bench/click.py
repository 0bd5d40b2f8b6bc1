"""``python -m bench.click``: what a tracked click costs the customer before the redirect (not part of the tests).

Starts a fresh Temporal dev server and embedded PostgreSQL (migrated), records ``--clicks`` sent email messages
(default 500) through ``store.messages.insert_message`` and makes one sealed click link per message with
``activities.links.click_url``, the way the send activity does. The API runs in its own process, as in production
(``create_app``, uvicorn on 127.0.0.1, its own pool and Temporal client, the drainer running). Each click is a new
connection, as a customer's browser opening a link from a mailbox would: ``GET /c/{token}`` until the 302 has been
read, interleaved one for one with ``GET /healthz`` of the same app (the baseline: the same HTTP stack doing no
work). Every click is a distinct message, so each one stores its ``email_clicked`` event and counts it on the
message (none is a ten-second duplicate); routing the event runs after the answer (a journey waits for
``email_clicked``, so the router looks it up).

Two figures per route: as the client saw it (connect, request, whole answer read), and inside the server (an ASGI
wrapper around the app: from the request's arrival to the start of the answer), which is what the click itself
costs. Prints median, p95 and p99 of both routes and their ratio; the target is a click under 20 ms. Run it alone.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from activities import links
from api.app import create_app
from config.settings import Settings
from devstack.ports import free_port
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import DevServer
from journeys import parse_journey
from store import create_pool, migrate
from store import journeys as journey_store
from store.messages import NewMessage, insert_message
from workers.client import connect

JOURNEY = {
    "id": "bench-click",
    "name": "Bench click",
    "trigger": {"event": "cart_abandoned"},
    "steps": [
        {"id": "remind", "type": "send", "channel": "email", "template": {"subject": "Hi", "text": "Your cart"}},
        {"id": "await-click", "type": "wait_for", "event": "email_clicked", "timeout": "3d"},
    ],
}
LINK = "https://shop.example/cart?utm_source=parcours&item=42"
PUBLIC = "http://127.0.0.1"


TIMINGS_PATH = "/__bench/timings"


class ApiServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the parent stops it
        pass


class Timed:
    """ASGI wrapper: milliseconds from a request's arrival to the start of its answer, per path kind."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.times: dict[str, list[float]] = {"click": [], "healthz": []}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == TIMINGS_PATH:
            body = json.dumps(self.times).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"json")]})
            await send({"type": "http.response.body", "body": body})
            return
        kind = "click" if scope["path"].startswith("/c/") else "healthz" if scope["path"] == "/healthz" else None
        started = time.perf_counter()

        async def timed_send(message: Any) -> None:
            if kind and message["type"] == "http.response.start":
                self.times[kind].append((time.perf_counter() - started) * 1000)
            await send(message)

        await self.app(scope, receive, timed_send)


async def serve(database_url: str, temporal: str, port: int) -> None:
    """The API process: what ``parcours api`` runs, wrapped in ``Timed``."""
    settings = Settings(
        database_url=database_url, temporal_address=temporal, public_base_url=PUBLIC, otel_exporter="none",
        log_level="WARNING", log_format="console",
    )  # fmt: skip
    pool = await create_pool(database_url, min_size=2, max_size=settings.database_pool_max)
    client = await connect(settings)
    app = Timed(create_app(settings, pool=pool, client=client))
    server = ApiServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    try:
        await server.serve()
    finally:
        await pool.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def record_messages(pool: Any, count: int) -> list[str]:
    """``count`` sent emails to distinct customers; the path of one click link per message."""
    settings = Settings(public_base_url=PUBLIC)
    paths = []
    now = datetime.now(UTC)
    for i in range(count):
        customer, key = f"click-c{i}", f"bench-click:click-c{i}:e{i}:remind:1"
        await insert_message(
            pool,
            NewMessage(
                idempotency_key=key, journey_id="bench-click", journey_version=1, step_id="remind",
                customer_id=customer, entry_id=f"e{i}", channel="email", topic=None, kind="marketing",
                status="sent", reason=None, recipient=f"{customer}@bench.example", rendered={"subject": "Hi"},
                provider_message_id=None, provider_response=None, error=None, attempts=1, decided_at=now,
                choice=None,
            ),
        )  # fmt: skip
        url = links.click_url(settings, links.tracking_payload(customer, key, "bench-click", "remind", "email"), LINK)
        paths.append(url.removeprefix(PUBLIC))
    return paths


async def timed_get(base: str, path: str, expect: int) -> float:
    """One request on a fresh connection; milliseconds until the whole answer was read."""
    async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        started = time.perf_counter()
        answer = await http.get(path)
        elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != expect:
        raise RuntimeError(f"GET {path[:40]}...: {answer.status_code}, expected {expect}")
    return elapsed


def summary(label: str, clicks: list[float], health: list[float]) -> dict[str, float]:
    print(f"{label}")
    print(f"  {'':<26}{'median':>10}{'p95':>10}{'p99':>10}")
    for name, values in (("GET /c/{token} -> 302", clicks), ("GET /healthz (baseline)", health)):
        figures = (statistics.median(values), percentile(values, 0.95), percentile(values, 0.99))
        print(f"  {name:<26}" + "".join(f"{v:8.2f}ms" for v in figures))
    ratios = [
        statistics.median(clicks) / statistics.median(health),
        percentile(clicks, 0.95) / percentile(health, 0.95),
        percentile(clicks, 0.99) / percentile(health, 0.99),
    ]
    print(f"  {'click / baseline':<26}" + "".join(f"{r:9.2f}x" for r in ratios))
    return {"median": statistics.median(clicks), "p95": percentile(clicks, 0.95)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--pause", type=float, default=0.005, help="seconds between a click's answer and the next click"
    )
    parser.add_argument("--serve", nargs=3, metavar=("DATABASE_URL", "TEMPORAL", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve[0], args.serve[1], int(args.serve[2]))
        return
    workdir = Path(tempfile.mkdtemp(prefix="parcours-bench-click-"))
    async with contextlib.AsyncExitStack() as exits:
        dev = DevServer(workdir / "temporal")
        client_task = asyncio.create_task(dev.start())
        exits.push_async_callback(dev.stop)
        postgres = EmbeddedPostgres(workdir / "postgres")
        await asyncio.to_thread(postgres.start)
        exits.callback(postgres.stop)
        url = await asyncio.to_thread(postgres.ensure_database, "parcours_bench")
        await migrate(url)
        await client_task
        pool = await create_pool(url, min_size=1, max_size=2)
        exits.push_async_callback(pool.close)
        await journey_store.publish(pool, parse_journey(JOURNEY))
        paths = await record_messages(pool, args.clicks + args.warmup)

        port = free_port()
        api = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.click", "--serve", url, dev.address, str(port)
        )

        async def stop_api() -> None:
            api.terminate()
            await api.wait()

        exits.push_async_callback(stop_api)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as probe:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await probe.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)

        for path in paths[: args.warmup]:
            await timed_get(base, path, 302)
            await timed_get(base, "/healthz", 200)
        clicks: list[float] = []
        health: list[float] = []
        for path in paths[args.warmup :]:
            clicks.append(await timed_get(base, path, 302))
            health.append(await timed_get(base, "/healthz", 200))
            await asyncio.sleep(args.pause)  # the click's routing runs after its answer, meanwhile
        async with httpx.AsyncClient(base_url=base) as http:
            inside = (await http.get(TIMINGS_PATH)).json()
        recorded = await pool.fetchval("SELECT count(*) FROM events WHERE name = 'email_clicked'")
        counted = await pool.fetchval("SELECT count(*) FROM messages WHERE clicks > 0")

        print(f"{args.clicks} clicks (+{args.warmup} warm-up), each on a new connection; {recorded} click events")
        print(f"stored, {counted} messages counted")
        summary("as the client saw it (connect to last byte):", clicks, health)
        server = summary(
            "inside the server (arrival to the start of the answer):",
            inside["click"][args.warmup :],
            inside["healthz"][args.warmup :],
        )
        verdict = "met" if server["p95"] < 20 else "NOT met"
        print(f"target: a click under 20 ms before the redirect (server p95 {server['p95']:.1f} ms): {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
