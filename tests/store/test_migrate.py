"""The store layer on a real PostgreSQL: migrations, schema guarantees, the embedded server, the inbox."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from activities.channels.base import OutboundMessage, PermanentDeliveryError
from activities.channels.inbox import InboxChannel
from devstack.postgres import EmbeddedPostgres, EmbeddedPostgresError
from store import MigrationChecksumError, migrate
from store.migrate import MIGRATIONS_DIR, load_migrations

ALL_VERSIONS = [m.version for m in load_migrations()]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def fresh_database(postgres: EmbeddedPostgres) -> str:
    return await asyncio.to_thread(postgres.ensure_database, f"t_{uuid.uuid4().hex[:16]}")


async def test_migrate_twice_is_a_no_op(postgres: EmbeddedPostgres) -> None:
    url = await fresh_database(postgres)
    assert await migrate(url) == ALL_VERSIONS
    customer = uid("c")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO customers (id) VALUES ($1)", customer)
        before = await conn.fetch("SELECT version, checksum, applied_at FROM schema_migrations")

        assert await migrate(url) == []

        assert await conn.fetch("SELECT version, checksum, applied_at FROM schema_migrations") == before
        assert await conn.fetchval("SELECT count(*) FROM customers WHERE id = $1", customer) == 1
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_once(postgres: EmbeddedPostgres) -> None:
    url = await fresh_database(postgres)
    first, second = await asyncio.gather(migrate(url), migrate(url))
    assert sorted([first, second]) == [[], ALL_VERSIONS]
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == ALL_VERSIONS
    finally:
        await conn.close()


async def test_changed_migration_is_refused_and_nothing_else_applies(
    postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    url = await fresh_database(postgres)
    folder = tmp_path / "migrations"
    folder.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(path, folder / path.name)
    (folder / "0901_extra.sql").write_text("CREATE TABLE extra (id int PRIMARY KEY);\n")
    assert await migrate(url, migrations_dir=folder) == [*ALL_VERSIONS, "0901_extra"]

    (folder / "0901_extra.sql").write_text("CREATE TABLE extra (id bigint PRIMARY KEY);\n")
    (folder / "0902_later.sql").write_text("CREATE TABLE later (id int PRIMARY KEY);\n")
    with pytest.raises(MigrationChecksumError, match=r"0901_extra\.sql"):
        await migrate(url, migrations_dir=folder)

    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT to_regclass('later')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE version = '0902_later'") == 0
    finally:
        await conn.close()


async def test_published_journey_version_is_immutable(pool: asyncpg.Pool) -> None:
    journey = uid("j")
    await pool.execute(
        "INSERT INTO journeys (id, name, latest_version, trigger_event) VALUES ($1, 'Welcome', 1, 'signed_up')",
        journey,
    )
    await pool.execute(
        "INSERT INTO journey_versions (journey_id, version, definition, checksum) VALUES ($1, 1, $2, 'abc')",
        journey,
        {"steps": [{"id": "hello"}]},
    )
    with pytest.raises(asyncpg.RaiseError, match="immutable"):
        await pool.execute(
            "UPDATE journey_versions SET definition = '{}'::jsonb WHERE journey_id = $1 AND version = 1", journey
        )
    with pytest.raises(asyncpg.RaiseError, match="immutable"):
        await pool.execute("DELETE FROM journey_versions WHERE journey_id = $1", journey)
    definition = await pool.fetchval("SELECT definition FROM journey_versions WHERE journey_id = $1", journey)
    assert definition == {"steps": [{"id": "hello"}]}


async def test_consent_current_is_newest_status_and_history_is_kept(pool: asyncpg.Pool) -> None:
    customer = uid("c")
    await pool.execute("INSERT INTO customers (id) VALUES ($1)", customer)
    changes = [
        ("channel", "email", "granted"),
        ("topic", "newsletter", "granted"),
        ("channel", "email", "withdrawn"),
        ("channel", "email", "granted"),
        ("topic", "newsletter", "withdrawn"),
    ]
    for scope, name, status in changes:
        await pool.execute(
            "INSERT INTO consent_events (customer_id, scope, name, status) VALUES ($1, $2, $3, $4)",
            customer,
            scope,
            name,
            status,
        )
    current = await pool.fetch(
        "SELECT scope, name, status FROM consent_current WHERE customer_id = $1 ORDER BY scope, name", customer
    )
    assert [tuple(r) for r in current] == [("channel", "email", "granted"), ("topic", "newsletter", "withdrawn")]
    history = await pool.fetch(
        "SELECT scope, name, status FROM consent_events WHERE customer_id = $1 ORDER BY id", customer
    )
    assert [tuple(r) for r in history] == changes


async def test_event_id_is_stored_once(pool: asyncpg.Pool) -> None:
    event_id = uid("e")
    insert = (
        "INSERT INTO events (event_id, customer_id, name, properties, occurred_at) VALUES ($1, $2, 'viewed', $3, now())"
    )
    await pool.execute(insert, event_id, uid("c"), {"page": "/pricing"})
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(insert, event_id, uid("c"), {})
    status = await pool.execute(insert + " ON CONFLICT (event_id) DO NOTHING", event_id, uid("c"), {})
    assert status == "INSERT 0 0"
    assert await pool.fetchval("SELECT properties FROM events WHERE event_id = $1", event_id) == {"page": "/pricing"}


def test_embedded_postgres_restart_keeps_data_and_port(tmp_path: Path) -> None:
    async def write(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
        finally:
            await conn.close()

    async def read(url: str) -> str:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval("SELECT v FROM kept")
        finally:
            await conn.close()

    server = EmbeddedPostgres(tmp_path / "pg", fsync=False)
    try:
        server.start()
        port = server.port
        url = server.ensure_database("keep")
        asyncio.run(write(url))

        server.stop()
        assert not server.is_running()
        began = time.monotonic()
        server.start()
        restart_seconds = time.monotonic() - began
        assert server.is_running()
        assert server.port == port
        assert asyncio.run(read(url)) == "still here"
        assert restart_seconds < 5, restart_seconds

        # A new handle on the same directory (how `parcours dev` resumes) adopts the running server...
        assert EmbeddedPostgres(tmp_path / "pg").start().port == port
        server.stop("immediate")
        # ...and after a crash-like stop, starts it again on the remembered port with the data recovered.
        with EmbeddedPostgres(tmp_path / "pg", fsync=False) as resumed:
            assert resumed.port == port
            assert resumed.ensure_database("keep") == url
            assert asyncio.run(read(url)) == "still here"
        assert not server.is_running()
    finally:
        server.stop()


def test_start_failure_reports_the_server_log(postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    clash = EmbeddedPostgres(tmp_path / "pg", port=postgres.port, fsync=False)
    with pytest.raises(EmbeddedPostgresError, match=r"(?s)did not start.*Address already in use"):
        clash.start()
    assert not clash.is_running()


def message(key: str, customer: str, content: dict[str, object]) -> OutboundMessage:
    return OutboundMessage(
        idempotency_key=key,
        customer_id=customer,
        channel="in_app",
        journey_id="j",
        step_id="s",
        content=content,
    )


async def test_inbox_stores_a_redelivered_message_once(pool: asyncpg.Pool) -> None:
    channel = InboxChannel(pool)
    key, customer = uid("k"), uid("c")
    msg = message(key, customer, {"title": "Hi", "body": "Welcome aboard", "data": {"cta": "/start"}})

    first = await channel.deliver(msg)
    again = await channel.deliver(msg)

    assert again == first
    assert first.provider_message_id == f"inbox:{first.response['inbox_id']}"
    rows = await pool.fetch("SELECT id, title, body, data FROM inbox_messages WHERE customer_id = $1", customer)
    assert [tuple(r) for r in rows] == [(first.response["inbox_id"], "Hi", "Welcome aboard", {"cta": "/start"})]
    await channel.close()


async def test_inbox_refuses_a_message_without_body(pool: asyncpg.Pool) -> None:
    customer = uid("c")
    with pytest.raises(PermanentDeliveryError):
        await InboxChannel(pool).deliver(message(uid("k"), customer, {"title": "Hi"}))
    assert await pool.fetchval("SELECT count(*) FROM inbox_messages WHERE customer_id = $1", customer) == 0


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
