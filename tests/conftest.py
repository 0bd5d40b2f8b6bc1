"""Shared fixtures.

PostgreSQL: one embedded server per test session (fsync off), one migrated database on it, one pool.
Tests share that database and never clean it: each test isolates itself by using unique ids
(``uuid.uuid4().hex`` in customer ids, journey ids, idempotency keys, event ids) and only asserts about its
own rows. A test that needs an empty database creates its own with ``postgres.ensure_database(unique_name)``.
A test that stops the server must start its own ``EmbeddedPostgres`` rather than stop the shared one.

This module must stay importable without a Temporal server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import structlog

from devstack.postgres import EmbeddedPostgres
from store import create_pool, migrate
from tests.support.databases import own_database

# Fixtures shared by the whole suite live in tests/support; registering them here makes them available
# everywhere without imports.
pytest_plugins = [
    "tests.support.temporal",
    "tests.support.mail",
    "tests.support.webhooks",
    "tests.support.engine",
]

TEST_DATABASE = "parcours_test"

# The webhook receivers of the tests listen on loopback, which production refuses (activities.channels.egress):
# the tests allow it explicitly, as `parcours dev` does. Tests of the refusal pass their own list.
LOOPBACK_ALLOWED = '["localhost", "127.0.0.0/8", "::1/128"]'
os.environ.setdefault("PARCOURS_WEBHOOK_ALLOW_HOSTS", LOOPBACK_ALLOWED)
# Every test shares one database and the same few keys: the suite's test sends together would pass one key's
# hourly budget. Tests of the budget set their own.
os.environ.setdefault("PARCOURS_TEST_SENDS_PER_HOUR", "10000")

# pytest-xdist starts its workers with COLUMNS=80, and the CLI's rich consoles read it once, at import: every CLI
# table would be cut at 80 columns whatever width a test asks for. Without it they read COLUMNS when they print.
os.environ.pop("COLUMNS", None)


def _uncached(configure: Callable[..., None]) -> Callable[..., None]:
    def configure_uncached(**settings: Any) -> None:
        configure(**{**settings, "cache_logger_on_first_use": False})

    return configure_uncached


# ``config.logging`` caches each module's logger on its first use, which is right for a process but makes
# ``structlog.testing.capture_logs`` see nothing from a logger an earlier test (in the same worker) already used.
structlog.configure = _uncached(structlog.configure)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """The session's PostgreSQL server (postgres superuser, trust auth, 127.0.0.1, a free port)."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"), fsync=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database_url(postgres: EmbeddedPostgres) -> str:
    """URL of the session's migrated database."""
    url = postgres.ensure_database(TEST_DATABASE)
    await migrate(url)
    return url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the migrated database, with json/jsonb as Python values."""
    pool = await create_pool(database_url, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture(loop_scope="session")
async def outbox_pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database of this test's own, for tests that drain the whole outbox: in the shared database other
    tests' unrouted events would be drained too (and change what the drainer concludes about Temporal)."""
    async with own_database(postgres, "outbox", max_size=5) as own:
        yield own
