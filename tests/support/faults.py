"""Real processes to break, for the fault tests (tests/faults).

* ``DevServer`` (from ``devstack.temporal``): ``temporal server start-dev`` as a child process with a persistent
  SQLite file (WAL, synchronous=normal, the search attributes), stoppable and restartable on the same port;
* ``ChildProcess``: a command (``parcours api``, ``parcours worker``: ``parcours_command``, with ``parcours_env``)
  as a child process that a test can ``kill -9``; ``WorkerProcess``: ``python -m workers`` as one;
* ``own_postgres``: an ``EmbeddedPostgres`` of the test's own (never the session's), migrated, stoppable;
* ``SlowSmtpSink``: the SMTP sink, answering DATA after a delay (to widen an in-flight window);
* ``mail_counts``: messages received per recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest_asyncio
from temporalio.client import Client

from devstack.postgres import EmbeddedPostgres
from devstack.temporal import DevServer, _die_with_parent
from store import migrate
from tests.support.mail import ReceivedMail, SmtpSink

ROOT = Path(__file__).resolve().parent.parent.parent
DATABASE = "parcours_faults"


def parcours_env(*, temporal_address: str, database_url: str, task_queue: str, **settings: Any) -> dict[str, str]:
    """The environment of a Parcours child process: no PARCOURS_ or TEMPORAL_ variable of ours leaks in,
    ``settings`` become ``PARCOURS_<NAME>``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARCOURS_", "TEMPORAL_"))}
    env.update(
        PARCOURS_TEMPORAL_ADDRESS=temporal_address,
        PARCOURS_DATABASE_URL=database_url,
        PARCOURS_TASK_QUEUE=task_queue,
        PARCOURS_OTEL_EXPORTER="none",
        PARCOURS_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    env.update({f"PARCOURS_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def worker_env(*, temporal_address: str, database_url: str, task_queue: str, **settings: Any) -> dict[str, str]:
    """The environment of a ``python -m workers`` child (the dev values, loopback webhooks allowed)."""
    values: dict[str, Any] = {
        "consent_default": "opt_in",
        "webhook_allow_hosts": '["localhost", "127.0.0.0/8", "::1/128"]',  # the test receivers
        **settings,
    }
    return parcours_env(temporal_address=temporal_address, database_url=database_url, task_queue=task_queue, **values)


def parcours_command(*args: str) -> list[str]:
    """``parcours ARGS``: the installed console script (the production entry point) beside this interpreter."""
    script = Path(sys.executable).parent / "parcours"
    assert script.exists(), f"{script} is missing: install the package (pip install -e .)"
    return [str(script), *args]


class ChildProcess:
    """A command in a child process, its output appended to ``log_path``; it dies with the test process."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight work is abandoned where it is."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class WorkerProcess(ChildProcess):
    """``python -m workers`` in a child process, its output in ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__([sys.executable, "-m", "workers"], env, log_path)


@dataclass
class OwnPostgres:
    server: EmbeddedPostgres
    url: str

    def stop(self) -> None:
        self.server.stop("fast")

    def start(self) -> None:
        self.server.start()


@contextlib.contextmanager
def started_postgres(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(data_dir, fsync=False)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")


@pytest_asyncio.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[OwnPostgres]:
    """A PostgreSQL server for one test (stop/start it at will), with a migrated database."""
    with started_postgres(tmp_path / "pg") as server:
        url = await asyncio.to_thread(server.ensure_database, DATABASE)
        await migrate(url)
        yield OwnPostgres(server, url)


@pytest_asyncio.fixture
async def dev_server(tmp_path: Path) -> AsyncIterator[tuple[DevServer, Client]]:
    """A dev server of the test's own, with a persistent SQLite file in tmp_path."""
    server = DevServer(tmp_path / "temporal")
    client = await server.start()
    try:
        yield server, client
    finally:
        await server.stop()


class SlowSmtpSink(SmtpSink):
    """The SMTP sink, answering DATA ``delay`` seconds after it arrives; ``data_started`` per recipient."""

    def __init__(self, delay: float = 0.3) -> None:
        super().__init__()
        self.delay = delay
        self.data_started: dict[str, float] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            self.data_started[rcpt] = time.time()
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def mail_counts(messages: list[ReceivedMail]) -> Counter[str]:
    """How many messages each recipient received."""
    counts: Counter[str] = Counter()
    for mail in messages:
        for rcpt in mail.rcpt_tos:
            counts[rcpt] += 1
    return counts


def duplicates_report(messages: list[ReceivedMail]) -> list[tuple[str, int, set[str]]]:
    """(recipient, count, distinct Message-IDs) for every recipient that received more than one message."""
    by_rcpt: dict[str, list[str]] = {}
    for mail in messages:
        for rcpt in mail.rcpt_tos:
            by_rcpt.setdefault(rcpt, []).append(str(mail.message["Message-ID"]))
    return [(r, len(ids), set(ids)) for r, ids in by_rcpt.items() if len(ids) > 1]


async def wait_until(check: Any, *, timeout: float, interval: float = 0.25, what: str = "condition") -> Any:  # noqa: ASYNC109
    """Await ``check()`` until it is truthy; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {value!r})")


__all__ = [
    "ChildProcess",
    "DevServer",
    "OwnPostgres",
    "SlowSmtpSink",
    "WorkerProcess",
    "dev_server",
    "duplicates_report",
    "mail_counts",
    "own_postgres",
    "parcours_command",
    "parcours_env",
    "started_postgres",
    "wait_until",
    "worker_env",
]
