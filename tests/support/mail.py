"""A real SMTP server for tests: collects what it receives and can be told to refuse.

    async def test_x(smtp_sink: SmtpSink):
        settings = Settings(smtp_host=smtp_sink.host, smtp_port=smtp_sink.port)
        ...
        [mail] = await smtp_sink.wait_for(1)
        assert mail.message["Subject"] == "Welcome"

The server runs in aiosmtpd's own thread; ``wait_for`` is awaited on the test's loop.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest_asyncio
from aiosmtpd.controller import Controller

TRANSIENT_REPLY = "451 4.3.0 Temporary failure, try again later"
PERMANENT_REPLY = "550 5.1.1 Mailbox unavailable"


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """An aiosmtpd server on ``host``:``port`` that keeps every message it accepts in ``messages``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.messages: list[ReceivedMail] = []
        self.refused: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._failure: str | None = None
        self._failures_left: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None
        self._controller = Controller(self, hostname=host, port=self.port)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        await asyncio.to_thread(self._controller.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self._controller.stop)

    def fail(self, reply: str | int = TRANSIENT_REPLY, *, times: int | None = 1) -> None:
        """Answer DATA with ``reply`` for the next ``times`` messages (None: until ``reset``).

        ``reply`` is a full SMTP reply line, or just 451 or 550 for the standard ones above.
        """
        if isinstance(reply, int):
            reply = {451: TRANSIENT_REPLY, 550: PERMANENT_REPLY}.get(reply, f"{reply} Refused by the test sink")
        with self._lock:
            self._failure = reply
            self._failures_left = times

    def reset(self) -> None:
        """Accept everything again and forget what was received."""
        with self._lock:
            self._failure = None
            self._failures_left = None
            self.messages.clear()
            self.refused.clear()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:  # noqa: ASYNC109
        """Wait until at least ``count`` messages were accepted; return them all."""
        assert self._arrived is not None, "SmtpSink.start() was not awaited"
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._arrived.clear()
                    if len(self.messages) >= count:
                        return list(self.messages)
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(
                f"expected {count} message(s) within {timeout}s, the SMTP sink received {len(self.messages)}"
            ) from None

    # aiosmtpd handler hook; runs in the server's thread.
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        mail = ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), parsed, raw)
        with self._lock:
            failure = self._failure
            if failure is not None:
                if self._failures_left is not None:
                    self._failures_left -= 1
                    if self._failures_left <= 0:
                        self._failure = self._failures_left = None
                self.refused.append(mail)
            else:
                self.messages.append(mail)
        if failure is None and self._loop is not None and self._arrived is not None:
            self._loop.call_soon_threadsafe(self._arrived.set)
        return failure or "250 OK"


@pytest_asyncio.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    sink = SmtpSink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()
