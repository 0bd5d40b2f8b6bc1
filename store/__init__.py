"""PostgreSQL: the connection pool and the migrations (the embedded server of the local stack is in devstack)."""

from store.migrate import MigrationChecksumError, MigrationError, migrate
from store.pool import create_pool

__all__ = [
    "MigrationChecksumError",
    "MigrationError",
    "create_pool",
    "migrate",
]
