"""PostgreSQL: the connection pool, the migrations and the embedded server for local use and tests."""

from store.embedded import EmbeddedPostgres, EmbeddedPostgresError
from store.migrate import MigrationChecksumError, MigrationError, migrate
from store.pool import create_pool

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "MigrationChecksumError",
    "MigrationError",
    "create_pool",
    "migrate",
]
