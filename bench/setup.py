"""The benchmarks' database: an embedded PostgreSQL in a folder, migrated, loaded once, and a pool on it.

``async with database(keep, load=...) as pool`` starts the server (``devstack.postgres.EmbeddedPostgres``) in
``keep``, or in a fresh temp folder that is removed on the way out when ``keep`` is None; creates the database and
migrates it; runs ``load(conn)`` once, unless a previous run with the same ``keep`` folder finished loading (it
leaves a marker file beside the cluster: a load that was interrupted starts over on an emptied database, instead of
timing a half-loaded one); and yields a pool. Leaving the block closes the pool and stops the server.

Used by ``bench.console`` and ``bench.reports``. A benchmark that also starts Temporal (``bench.run``,
``bench.broadcast``) starts it beside this block, e.g. ``devstack.temporal.DevServer(folder / "temporal")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from devstack.postgres import EmbeddedPostgres
from store import create_pool, migrate

Loader = Callable[[asyncpg.Connection], Awaitable[Any]]


@contextlib.asynccontextmanager
async def database(
    keep: Path | None = None,
    *,
    load: Loader | None = None,
    name: str = "bench",
    prefix: str = "parcours-bench-",
    min_size: int = 2,
    max_size: int = 10,
) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a migrated (and, with ``load``, loaded) database; see the module docstring."""
    folder = keep or Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{name}.loaded"
    try:
        server = EmbeddedPostgres(folder)
        await asyncio.to_thread(server.start)
        try:
            if load is not None and not marker.exists():
                await _drop(server.url_for("postgres"), name)  # an earlier load may have stopped half-way
            url = await asyncio.to_thread(server.ensure_database, name)
            await migrate(url)
            pool = await create_pool(url, min_size=min_size, max_size=max_size)
            try:
                if load is not None and not marker.exists():
                    started = time.perf_counter()
                    async with pool.acquire() as conn:
                        await load(conn)
                    marker.write_text(f"loaded in {time.perf_counter() - started:.1f} s\n")
                    print(f"loaded in {time.perf_counter() - started:.1f} s ({folder})")
                elif load is not None:
                    print(f"reusing the database loaded in {folder} ({marker.read_text().strip()})")
                yield pool
            finally:
                await pool.close()
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


async def _drop(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
