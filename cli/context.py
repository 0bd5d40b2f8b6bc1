"""What every command shares: settings, logging, where the database and Temporal are, and one-line errors.

Commands other than ``dev`` never start servers. They use ``PARCOURS_DATABASE_URL`` when set; otherwise the
embedded PostgreSQL of the data dir (``<data_dir>/postgres``) if it is running, i.e. while ``parcours dev``
runs in the same directory (only then is ``devstack`` imported). Temporal is ``PARCOURS_TEMPORAL_ADDRESS`` or
``127.0.0.1:<temporal_port>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any, NoReturn, TypeVar

import asyncpg
import structlog
import typer
from rich.console import Console
from temporalio.client import Client

from config.logging import configure_logging
from config.settings import Settings
from store.pool import create_pool
from workers.client import connect, temporal_address

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


class CliError(Exception):
    """An error the user can act on: printed as one line, exit code 1 (or ``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 1) -> NoReturn:
    raise CliError(message, code)


def setup_logging(settings: Settings, *, console_default: bool = True) -> None:
    """Logs go to stderr; in an interactive command they are human-readable unless PARCOURS_LOG_FORMAT is set."""
    fmt = settings.log_format
    if console_default and "PARCOURS_LOG_FORMAT" not in os.environ:
        fmt = "console"
    configure_logging(settings.log_level, fmt, redacted=settings.log_redact)
    # Write to whatever sys.stderr is at the time of the call, not the stream of the moment of configuration
    # (in-process runners such as typer's CliRunner swap and close it).
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=_Stderr()))  # type: ignore[arg-type]


class _Stderr:
    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def database_url(settings: Settings) -> str:
    """The configured database, else the running embedded server of the data dir."""
    if settings.database_url:
        return settings.database_url
    # Only a developer's machine gets here: production commands are given PARCOURS_DATABASE_URL and so never
    # import the local stack.
    from devstack.postgres import DATABASE_NAME, embedded_postgres

    server = embedded_postgres(settings)
    if server.is_running():
        return server.url_for(DATABASE_NAME)
    fail(
        f"no database: set PARCOURS_DATABASE_URL, or start `parcours dev` (no embedded PostgreSQL is running "
        f"in {server.data_dir})"
    )


@contextlib.asynccontextmanager
async def open_pool(settings: Settings, url: str | None = None) -> AsyncIterator[asyncpg.Pool]:
    url = url or database_url(settings)
    try:
        pool = await create_pool(url, min_size=1, max_size=settings.database_pool_max)
    except (OSError, asyncpg.PostgresError) as exc:
        fail(f"cannot connect to PostgreSQL at {_redact(url)}: {exc}")
    try:
        yield pool
    finally:
        await pool.close()


async def open_client(settings: Settings) -> Client:
    address = temporal_address(settings)
    try:
        return await connect(settings)
    except RuntimeError as exc:
        fail(f"cannot connect to Temporal at {address} (set PARCOURS_TEMPORAL_ADDRESS or start `parcours dev`): {exc}")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; any error becomes one line on stderr and a non-zero exit (no traceback).

    ``PARCOURS_DEBUG=1`` lets the traceback through.
    """
    try:
        return asyncio.run(coro)
    except CliError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        if os.environ.get("PARCOURS_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err_console.print(
            f"[bold red]error:[/] {type(exc).__name__}{': ' + message if message else ''}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def _redact(url: str) -> str:
    """The URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
