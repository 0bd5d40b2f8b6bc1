"""The shared asyncpg pool (store.pool): a connection comes back clean whatever its last user left."""

from __future__ import annotations

import uuid

import asyncpg


async def test_a_connection_comes_back_to_the_pool_with_nothing_of_its_last_user(database_url: str) -> None:
    """The pool skips asyncpg's reset query; a connection still comes back without a transaction or a lock."""
    from store.pool import create_pool

    key = f"pool-test-{uuid.uuid4().hex}"
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")  # left open by a careless user
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
            await conn.execute("INSERT INTO customers (id) VALUES ($1)", key)
        async with pool.acquire() as conn:  # the same connection (max_size=1)
            assert await conn.fetchval("SELECT count(*) FROM customers WHERE id = $1", key) == 0
            assert not conn.is_in_transaction()
        other = await asyncpg.connect(database_url)
        try:
            assert await other.fetchval("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", key)
        finally:
            await other.close()
    finally:
        await pool.close()
