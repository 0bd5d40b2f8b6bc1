"""SMTP servers on this machine, from aiosmtpd (the local extra).

``DevMailSink``: the mail of ``parcours dev`` when no SMTP server answers; prints each message and keeps it as an
``.eml`` file (``devstack.stack`` falls back to the console channel when aiosmtpd is missing).

``SmtpSink``: collects what it receives and can be told to refuse, for tests and the benchmark::

    sink = SmtpSink()
    await sink.start()
    settings = Settings(smtp_host=sink.host, smtp_port=sink.port)
    ...
    [mail] = await sink.wait_for(1)
    assert mail.message["Subject"] == "Welcome"

The server runs in aiosmtpd's own thread; ``wait_for`` is awaited on the caller's loop. Every received message
records the ``peer`` (client address) of the connection it came over, so a test can count SMTP sessions.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from rich.console import Console

from devstack.ports import free_port

TRANSIENT_REPLY = "451 4.3.0 Temporary failure, try again later"
PERMANENT_REPLY = "550 5.1.1 Mailbox unavailable"


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    # The client's (host, port) of the SMTP connection that carried the message: one per session.
    peer: Any = None


class SmtpSink:
    """An aiosmtpd server on ``host``:``port`` that keeps every message it accepts in ``messages``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.messages: list[ReceivedMail] = []
        self.refused: list[ReceivedMail] = []
        self.unanswered: list[ReceivedMail] = []  # taken in, then the connection was closed without a reply
        self._hang_ups_left = 0
        self._lock = threading.Lock()
        self._failure: str | None = None
        self._failures_left: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None
        self._servers: list[Any] = []  # aiosmtpd's per-connection protocol of every connection that sent DATA
        self._controller = Controller(self, hostname=host, port=self.port)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        await asyncio.to_thread(self._controller.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self._controller.stop)

    async def restart(self) -> None:
        """Stop the server, then start a new one on the same port (what a server restart looks like)."""
        await self.stop()
        with self._lock:
            self._servers.clear()
        self._controller = Controller(self, hostname=self.host, port=self.port)
        await self.start()

    @property
    def sessions(self) -> set[Any]:
        """The connections (client peers) that carried the messages received so far."""
        with self._lock:
            return {m.peer for m in self.messages + self.refused + self.unanswered}

    @property
    def open_sessions(self) -> int:
        """How many of the connections that carried messages the server still has open."""
        with self._lock:
            return sum(1 for server in self._servers if server.transport is not None)

    def hang_up(self) -> None:
        """Close the server side of every open connection, as a server dropping idle sessions does.

        Blocks (the caller's loop included) until the sockets are closed, so a client on that loop has not
        noticed yet when this returns: its next command goes out on a connection the server has already closed.
        """

        async def close_all() -> None:
            for server in self._servers:
                if server.transport is not None:
                    server.transport.close()
            await asyncio.sleep(0.05)  # let the transports run connection_lost (which closes the sockets)

        with self._lock:
            self._servers = [s for s in self._servers if s.transport is not None]
        asyncio.run_coroutine_threadsafe(close_all(), self._controller.loop).result(timeout=5)

    def fail(self, reply: str | int = TRANSIENT_REPLY, *, times: int | None = 1) -> None:
        """Answer DATA with ``reply`` for the next ``times`` messages (None: until ``reset``).

        ``reply`` is a full SMTP reply line, or just 451 or 550 for the standard ones above.
        """
        if isinstance(reply, int):
            reply = {451: TRANSIENT_REPLY, 550: PERMANENT_REPLY}.get(reply, f"{reply} Refused by the test sink")
        with self._lock:
            self._failure = reply
            self._failures_left = times

    def hang_up_on_data(self, *, times: int = 1) -> None:
        """For the next ``times`` messages, close the connection once the message is in instead of answering."""
        with self._lock:
            self._hang_ups_left = times

    def reset(self) -> None:
        """Accept everything again and forget what was received."""
        with self._lock:
            self._failure = None
            self._failures_left = None
            self._hang_ups_left = 0
            self.messages.clear()
            self.refused.clear()
            self.unanswered.clear()

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
        mail = ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), parsed, raw, session.peer)
        with self._lock:
            if server not in self._servers:
                self._servers.append(server)
            hang_up = self._hang_ups_left > 0
            failure = self._failure
            if hang_up:
                self._hang_ups_left -= 1
                self.unanswered.append(mail)
            elif failure is not None:
                if self._failures_left is not None:
                    self._failures_left -= 1
                    if self._failures_left <= 0:
                        self._failure = self._failures_left = None
                self.refused.append(mail)
            else:
                self.messages.append(mail)
        if hang_up:
            server.transport.close()
            await asyncio.Event().wait()  # cancelled by aiosmtpd when the connection is lost
        if failure is None and self._loop is not None and self._arrived is not None:
            self._loop.call_soon_threadsafe(self._arrived.set)
        return failure or "250 OK"


class DevMailSink:
    def __init__(self, host: str, port: int, folder: Path, console: Console) -> None:
        self.host = host
        self.port = port
        self.folder = folder
        self.console = console
        self.count = 0
        self._controller = Controller(self, hostname=host, port=port)

    def start(self) -> None:
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # one line per connection otherwise
        self.folder.mkdir(parents=True, exist_ok=True)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    # aiosmtpd handler hook; runs in the server's thread.
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        self.count += 1
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(message.get("Message-ID", self.count)).strip("<>"))[:120]
        path = self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}.eml"
        path.write_bytes(raw)
        self.console.print(
            f"[magenta]mail[/] to {', '.join(envelope.rcpt_tos)}: {message.get('Subject', '(no subject)')} "
            f"[dim]({path.name})[/]",
            highlight=False,
        )
        return "250 OK"
