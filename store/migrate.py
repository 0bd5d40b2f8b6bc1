"""Apply the SQL migrations in ``store/migrations`` (``NNNN_name.sql``), in order, once each.

Each file runs in its own transaction and is recorded in ``schema_migrations`` with a checksum of its text.
The whole run holds a PostgreSQL advisory lock, so concurrent callers (two workers starting together) wait for
each other instead of racing; the second finds nothing left to do. A file is immutable once applied: if its
text changed, ``migrate`` refuses to run and names the file. Write a new migration instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from store.db import Connection, Db, connection

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Fixed key for pg_advisory_lock: the first 8 bytes of sha256("parcours.store.migrate"), as a signed bigint.
ADVISORY_LOCK_KEY = int.from_bytes(hashlib.sha256(b"parcours.store.migrate").digest()[:8], "big", signed=True)

_FILE_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migrations cannot be applied as they are."""


class MigrationChecksumError(MigrationError):
    """An applied migration file was changed afterwards."""


@dataclass(frozen=True)
class Migration:
    version: str
    """The file name without ``.sql``, e.g. ``0001_init``."""
    path: Path
    sql: str
    checksum: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of ``directory``, in order. Other files are ignored; duplicate numbers are an error."""
    migrations: list[Migration] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name!r} is not named NNNN_name.sql")
        number = match.group(1)
        if number in seen:
            raise MigrationError(f"migrations {seen[number]!r} and {path.name!r} share the number {number}")
        seen[number] = path.name
        # Checksum the text with normalised line endings, so a checkout with CRLF does not count as a change.
        sql = path.read_text(encoding="utf-8").replace("\r\n", "\n")
        checksum = hashlib.sha256(sql.encode("utf-8")).hexdigest()
        migrations.append(Migration(path.stem, path, sql, checksum))
    return migrations


async def migrate(dsn_or_conn: str | Db, *, migrations_dir: Path | None = None) -> list[str]:
    """Apply the migrations not applied yet; return their versions (empty when the schema is up to date).

    Args:
        dsn_or_conn: A PostgreSQL URL, an open (or pooled) connection, or a pool (one connection is borrowed).
        migrations_dir: Where the ``NNNN_name.sql`` files are; defaults to the package's own.

    Raises:
        MigrationChecksumError: An applied file has changed; nothing is applied.
        MigrationError: The files are misnamed or numbered twice.
    """
    migrations = load_migrations(migrations_dir or MIGRATIONS_DIR)
    if isinstance(dsn_or_conn, str):
        conn = await asyncpg.connect(dsn_or_conn)
        try:
            return await _migrate(conn, migrations)
        finally:
            await conn.close()
    async with connection(dsn_or_conn) as given:
        return await _migrate(given, migrations)


async def _migrate(conn: Connection, migrations: list[Migration]) -> list[str]:
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {row["version"]: row["checksum"] for row in rows}

        changed = [m for m in migrations if m.version in applied and applied[m.version] != m.checksum]
        if changed:
            names = ", ".join(m.path.name for m in changed)
            raise MigrationChecksumError(
                f"migration {names} changed after it was applied (checksum differs from schema_migrations); "
                "applied migrations are immutable: revert the change and add a new migration instead"
            )

        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
            log.info("store.migration_applied", version=migration.version)
            done.append(migration.version)
        return done
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
