"""The asyncpg connection pool every component shares."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def _init_connection(conn: asyncpg.Connection) -> None:
    # json and jsonb columns take and return Python values (dicts, lists) instead of JSON text.
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool beyond asyncpg's rollback of an open transaction:
    nothing. Parcours keeps no session state on pooled connections (no SET, LISTEN, cursors or session-level
    advisory locks; the locks it takes are transaction-scoped, and migrate releases its own), so asyncpg's default
    reset query (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) would be a round trip per
    release for nothing."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    """Open a pool whose connections encode and decode json/jsonb as Python values.

    Extra keyword arguments (``command_timeout``, ``statement_cache_size``, ...) go to ``asyncpg.create_pool``.
    """
    kwargs.setdefault("reset", _keep_session)
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection, **kwargs)
    assert pool is not None  # asyncpg types the awaited pool as optional
    return pool
