"""Migrations (store.migrate) and the guarantees the schema gives: immutable versions, current consent, events once."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from devstack.postgres import EmbeddedPostgres
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
