"""Real processes to break, for the fault tests (tests/faults).

* ``DevServer`` (from ``devstack.temporal``): ``temporal server start-dev`` as a child process with a persistent
  SQLite file (WAL, synchronous=normal, the search attributes), stoppable and restartable on the same port;
* ``WorkerProcess``: ``python -m workers`` as a child process (so a test can ``kill -9`` it);
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
from typing import Any

import pytest_asyncio
from temporalio.client import Client

from devstack.postgres import EmbeddedPostgres
from devstack.temporal import DevServer
from store import migrate
from tests.support.mail import ReceivedMail, SmtpSink

ROOT = Path(__file__).resolve().parent.parent.parent
DATABASE = "parcours_faults"


def worker_env(*, temporal_address: str, database_url: str, task_queue: str, **settings: Any) -> dict[str, str]:
    """The environment of a ``python -m workers`` child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARCOURS_", "TEMPORAL_"))}
    env.update(
        PARCOURS_TEMPORAL_ADDRESS=temporal_address,
        PARCOURS_DATABASE_URL=database_url,
        PARCOURS_TASK_QUEUE=task_queue,
        PARCOURS_OTEL_EXPORTER="none",
        PARCOURS_LOG_LEVEL="WARNING",
        PARCOURS_CONSENT_DEFAULT="opt_in",
        PARCOURS_WEBHOOK_ALLOW_HOSTS='["localhost", "127.0.0.0/8", "::1/128"]',  # the test receivers
        PYTHONPATH=str(ROOT),
    )
    env.update({f"PARCOURS_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class WorkerProcess:
    """``python -m workers`` in a child process, its output in ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight activities are abandoned where they are."""
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
    "DevServer",
    "OwnPostgres",
    "SlowSmtpSink",
    "WorkerProcess",
    "dev_server",
    "duplicates_report",
    "mail_counts",
    "own_postgres",
    "started_postgres",
    "wait_until",
    "worker_env",
]
