"""The worker process's run loop (``parcours worker`` and ``python -m workers``): one worker until SIGINT or
SIGTERM, then in-flight tasks finish and it exits."""

from __future__ import annotations

import asyncio
import signal

from config.metrics import serve_metrics
from config.settings import Settings
from store.pool import create_pool
from workers.client import connect
from workers.worker import run_worker


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGINT and SIGTERM (the first one; the worker then drains)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def serve(settings: Settings, database_url: str) -> None:
    """Connect to Temporal and PostgreSQL, run the worker until a signal, close the pool."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    if settings.metrics_port:
        serve_metrics(settings.metrics_host, settings.metrics_port)
    client = await connect(settings)
    pool = await create_pool(database_url, min_size=1, max_size=settings.database_pool_max)
    try:
        await run_worker(client, settings, pool, stop)
    finally:
        await pool.close()
