"""``python -m workers``: run one worker until SIGINT or SIGTERM, then finish in-flight tasks and exit.

Needs ``PARCOURS_DATABASE_URL``; Temporal is ``PARCOURS_TEMPORAL_ADDRESS`` (or ``TEMPORAL_ADDRESS``), else
``127.0.0.1:<PARCOURS_TEMPORAL_PORT>``. ``parcours worker`` does the same and can also find the database of a
running ``parcours dev``.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog

from config.logging import configure_logging
from config.settings import Settings, get_settings
from config.tracing import configure_tracing
from store.pool import create_pool
from workers.client import connect
from workers.worker import run_worker

log = structlog.get_logger(__name__)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGINT and SIGTERM (the first one; the worker then drains)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def serve(settings: Settings, database_url: str) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    client = await connect(settings)
    pool = await create_pool(database_url, min_size=1, max_size=settings.database_pool_max)
    try:
        await run_worker(client, settings, pool, stop)
    finally:
        await pool.close()


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    configure_tracing("parcours-worker", settings.otel_exporter)
    if not settings.database_url:
        print(
            "PARCOURS_DATABASE_URL is not set (`parcours worker` can use the database of `parcours dev`)",
            file=sys.stderr,
        )
        sys.exit(2)
    asyncio.run(serve(settings, settings.database_url))


if __name__ == "__main__":
    main()
