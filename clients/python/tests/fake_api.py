"""A stand-in for the Parcours API on 127.0.0.1, for the client's tests: the standard library only.

It answers ``POST /v1/events`` and ``POST /v1/identify`` in the API's shapes (202 with a result per event, an
event id seen before is a ``duplicate``; 401 with ``field: authorization`` for a wrong key), records every request
it answers, and can be told to answer the next requests with a 5xx or a 4xx.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int
    body: dict[str, Any]


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    status: int


@dataclass
class FakeApi:
    key: str = "test-key"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Events by id, each stored once however often it was sent."""
    _planned: list[Reply] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, times: int, status: int = 503, message: str = "try later", field: str | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and the API's error body)."""
        error: dict[str, Any] = {"message": message, "field": field}
        with self._lock:
            self._planned = [Reply(status, {"error": error})] * times

    def bodies(self, path: str = "/v1/events") -> list[dict[str, Any]]:
        return [r.body for r in self.received if r.path == path]

    def start(self) -> FakeApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                reply = api.answer(self.path, self.headers.get("Authorization", ""), body)
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-api").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def answer(self, path: str, authorization: str, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._planned:
                reply = self._planned.pop(0)
            elif authorization != f"Bearer {self.key}":
                reply = Reply(401, {"error": {"message": "missing or invalid API key", "field": "authorization"}})
            elif path == "/v1/events":
                reply = Reply(202, {"results": [self._store(event) for event in body["events"]]})
            elif path == "/v1/identify":
                merges = [{"alias_kind": "anonymous_id", "alias_value": a} for a in body.get("anonymous_ids", [])]
                profile = {"id": body["customer_id"], **body.get("traits", {})}
                reply = Reply(
                    200, {"customer_id": body["customer_id"], "created": True, "profile": profile, "merges": merges}
                )
            else:
                reply = Reply(404, {"error": {"message": f"no route {path}", "field": None}})
            self.received.append(Received(path, body, reply.status))
            return reply

    def _store(self, event: dict[str, Any]) -> dict[str, Any]:
        event_id = event["event_id"]
        status = "duplicate" if event_id in self.stored else "accepted"
        self.stored.setdefault(event_id, event)
        return {"event_id": event_id, "status": status}
