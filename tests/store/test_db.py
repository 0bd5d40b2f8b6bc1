"""store.db: a store function given a pool or a connection runs on the right connection and transaction."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from store import customers as customer_store
from store.db import connection, ping, transaction


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def test_a_function_given_a_connection_joins_the_callers_transaction(pool: asyncpg.Pool) -> None:
    customer = uid("c")
    async with pool.acquire() as conn:
        outer = conn.transaction()
        await outer.start()
        await customer_store.upsert_customer(conn, customer, email="a@example.com")
        await customer_store.record_consent(conn, customer, "channel", "email", "granted")
        # Nothing is visible outside the caller's transaction until it commits...
        assert await customer_store.get_customer(pool, customer) is None
        await outer.rollback()
    # ... and rolling it back drops what the functions wrote on that connection.
    assert await customer_store.get_customer(pool, customer) is None
    assert await customer_store.consent_of(pool, customer) == []


async def test_a_failed_inner_transaction_leaves_the_callers_transaction_usable(pool: asyncpg.Pool) -> None:
    customer = uid("c")
    async with transaction(pool) as conn:
        await customer_store.upsert_customer(conn, customer)
        with pytest.raises(customer_store.UnknownCustomerError):
            # record_consents opens its own transaction: a savepoint here, rolled back alone.
            await customer_store.record_consent(conn, uid("nobody"), "channel", "email", "granted")
        await customer_store.record_consent(conn, customer, "channel", "sms", "granted")
    assert await customer_store.consent_of(pool, customer) == [customer_store.Consent("channel", "sms", "granted")]


async def test_connection_borrows_from_a_pool_and_hands_back_a_connection_as_is(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as mine, connection(mine) as given:
        assert given is mine
    async with connection(pool) as borrowed:
        pid = await borrowed.fetchval("SELECT pg_backend_pid()")
        async with connection(pool) as second:  # a second borrower gets another connection
            assert await second.fetchval("SELECT pg_backend_pid()") != pid


async def test_transaction_options_reach_postgres(pool: asyncpg.Pool) -> None:
    async with transaction(pool, isolation="repeatable_read", readonly=True) as conn:
        assert await conn.fetchval("SHOW transaction_isolation") == "repeatable read"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("INSERT INTO customers (id) VALUES ($1)", uid("c"))


async def test_ping_answers_on_a_live_database_and_raises_on_a_closed_connection(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    assert await ping(conn) is True
    await conn.close()
    with pytest.raises(asyncpg.InterfaceError):
        await ping(conn)
