"""A real HTTP server for tests that records every request and answers from a script.

    async def test_x(webhook_sink: WebhookSink):
        webhook_sink.enqueue(500, 200)          # first request 500, second 200, then the default
        webhook_sink.set_default(400)           # or: every request 400
        ...
        [request] = await webhook_sink.wait_for(1)
        assert request.json()["type"] == "parcours.message"

A minimal HTTP/1.1 server on ``asyncio.start_server`` (keep-alive, Content-Length and chunked bodies): enough
for httpx and the like, with no threads and no signal handlers.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import pytest_asyncio


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None
    """A str is sent as text/plain, bytes as they are, anything else as JSON."""
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", "text/plain"
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json"


class _BadRequest(Exception):
    pass


def _as_reply(reply: int | Reply) -> Reply:
    return reply if isinstance(reply, Reply) else Reply(reply)


class WebhookSink:
    """Listens on 127.0.0.1 and a free port; ``url`` accepts any path."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self._default = Reply(200, {"ok": True})
        self._server: asyncio.Server | None = None
        self._arrived = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    def enqueue(self, *replies: int | Reply) -> None:
        """Answer the next requests with ``replies``, in order, then with the default."""
        self._script.extend(_as_reply(r) for r in replies)

    def set_default(self, reply: int | Reply) -> None:
        """Answer with ``reply`` whenever the queue is empty (initially 200 ``{"ok": true}``)."""
        self._default = _as_reply(reply)

    def reset(self) -> None:
        self._script.clear()
        self._default = Reply(200, {"ok": True})
        self.requests.clear()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:  # noqa: ASYNC109
        """Wait until at least ``count`` requests were received; return them all."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._arrived.clear()
                    if len(self.requests) >= count:
                        return list(self.requests)
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(
                f"expected {count} request(s) within {timeout}s, the webhook sink received {len(self.requests)}"
            ) from None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while request := await self._read_request(reader):
                self.requests.append(request)
                self._arrived.set()
                reply = self._script.popleft() if self._script else self._default
                await self._write_reply(writer, reply)
        except (_BadRequest, ValueError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
        request_line = await reader.readline()
        if not request_line:
            return None  # the client closed the connection
        try:
            method, path, _version = request_line.decode("latin-1").split()
        except ValueError:
            raise _BadRequest(request_line) from None
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int((await reader.readline()).split(b";")[0], 16):
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            while await reader.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        return RecordedRequest(method, path, headers, body)

    @staticmethod
    async def _write_reply(writer: asyncio.StreamWriter, reply: Reply) -> None:
        body, content_type = reply.encode()
        headers = {"content-type": content_type, **{k.lower(): v for k, v in reply.headers.items()}}
        headers["content-length"] = str(len(body))
        try:
            reason = HTTPStatus(reply.status).phrase
        except ValueError:
            reason = "Unknown"
        head = f"HTTP/1.1 {reply.status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode("latin-1") + b"\r\n" + body)
        await writer.drain()


@pytest_asyncio.fixture
async def webhook_sink() -> AsyncIterator[WebhookSink]:
    sink = WebhookSink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()
