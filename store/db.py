"""How store functions are handed PostgreSQL: a pool or a connection (``Db``), and a connection from either.

A store function that runs one statement takes ``Db`` and runs it on whatever it is given: on a pool it borrows
a connection for that statement, on a connection it joins whatever transaction the caller has open there. A
function that needs several statements on one connection (a transaction, a row lock) takes ``Db`` too and opens
``connection(db)`` or ``transaction(db)``; a function that only makes sense inside the caller's transaction
takes ``Connection``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
"""One connection: opened on its own, or borrowed from a pool (``pool.acquire()``)."""

Pool: TypeAlias = asyncpg.Pool
"""The pool every component shares (``store.create_pool``)."""

Db: TypeAlias = Pool | Connection
"""Where a store function runs its statements."""


@asynccontextmanager
async def connection(db: Db) -> AsyncIterator[Connection]:
    """A connection borrowed from ``db`` when it is a pool (returned on exit), else ``db`` itself."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


@asynccontextmanager
async def transaction(db: Db, **options: Any) -> AsyncIterator[Connection]:
    """``connection(db)`` inside a transaction (a savepoint when the caller's connection is in one already).

    ``options`` go to asyncpg's ``Connection.transaction`` (``isolation``, ``readonly``, ``deferrable``).
    """
    async with connection(db) as conn, conn.transaction(**options):
        yield conn


async def ping(db: Db) -> bool:
    """Whether PostgreSQL answers a trivial query (readiness checks)."""
    return bool(await db.fetchval("SELECT 1") == 1)
