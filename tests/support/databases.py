"""A migrated database of a test's own on the session's embedded PostgreSQL, for tests that must see an empty one
(the shared database holds every other test's rows)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg

from devstack.postgres import EmbeddedPostgres
from store import create_pool, migrate


@contextlib.asynccontextmanager
async def own_database(
    postgres: EmbeddedPostgres, prefix: str, *, min_size: int = 1, max_size: int = 6
) -> AsyncIterator[asyncpg.Pool]:
    """A new database named ``<prefix>_<random>``, migrated, and a pool on it (closed afterwards)."""
    url = postgres.ensure_database(f"{prefix}_{uuid.uuid4().hex[:12]}")
    await migrate(url)
    pool = await create_pool(url, min_size=min_size, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()
