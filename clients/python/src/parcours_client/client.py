"""A small client for services that send events and profiles to Parcours.

    from parcours_client import ParcoursClient

    with ParcoursClient("http://localhost:8000", "dev-key") as parcours:
        parcours.identify("cust-1", email="ada@example.com", attributes={"plan": "pro"})
        parcours.track("cust-1", "signed_up", {"source": "ads"})
    # leaving the block flushes what is queued

``track`` queues the event with an id generated at call time, so a retried batch is stored once; a full batch
(``batch_size``) is sent at once, the rest on ``flush()`` or ``close()``. 5xx answers and network errors are
retried with exponential backoff and jitter; a 4xx answer is the caller's mistake and raises at once. Events of
a batch that could not be delivered stay queued, so a later ``flush()`` sends them again.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx


class ParcoursError(Exception):
    """Base class of the client's errors."""


class ParcoursClientError(ParcoursError):
    """The API refused the request (4xx): retrying the same request cannot help."""

    def __init__(self, status: int, message: str, field: str | None = None, body: Any = None) -> None:
        self.status = status
        self.message = message
        self.field = field
        self.body = body
        super().__init__(f"{status}: {message}" + (f" (field: {field})" if field else ""))


class ParcoursUnavailableError(ParcoursError):
    """The API did not answer successfully after every retry (5xx or network errors)."""


class ParcoursClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        batch_size: int = 100,
        max_retries: int = 5,
        timeout: float = 10,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "parcours-python"},
            timeout=timeout,
            transport=transport,
        )
        self._queue: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.results: list[dict[str, Any]] = []
        """Per-event results of the batches sent so far (``accepted``, ``duplicate``, ``invalid``)."""

    # --- public API --------------------------------------------------------------------------------------

    def track(
        self,
        customer_id: str | None,
        event: str,
        properties: dict[str, Any] | None = None,
        *,
        anonymous_id: str | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Queue an event of ``customer_id``, or of a visitor known by ``anonymous_id`` only; returns its id.

        Sends the batch when it is full.
        """
        if customer_id is None and anonymous_id is None:
            raise ValueError("track needs a customer_id or an anonymous_id")
        event_id = event_id or str(uuid.uuid4())
        item = {
            "event_id": event_id,
            "name": event,
            "properties": properties or {},
            "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        }
        if customer_id is not None:
            item["customer_id"] = customer_id
        if anonymous_id is not None:
            item["anonymous_id"] = anonymous_id
        with self._lock:
            self._queue.append(item)
            full = len(self._queue) >= self.batch_size
        if full:
            self.flush()
        return event_id

    def identify(
        self,
        customer_id: str,
        *,
        email: str | None = None,
        phone: str | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        attributes: dict[str, Any] | None = None,
        anonymous_ids: list[str] | None = None,
        customer_ids: list[str] | None = None,
        aliases: dict[str, str] | None = None,
        explicit: bool = False,
        source: str = "api",
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Identify the customer now (not batched): set profile fields, link anonymous ids, other profile ids and
        aliases (``{"email": ...}``, ``{"phone": ...}``), merging the profiles behind them.

        Queued events are sent first, so a visitor's events are stored before the merge. Returns the answer of
        ``POST /v1/identify``: ``customer_id``, ``created``, ``profile`` and the ``merges`` this call made.
        """
        self.flush()
        traits = {
            key: value
            for key, value in {
                "email": email,
                "phone": phone,
                "timezone": timezone,
                "locale": locale,
                "attributes": attributes,
            }.items()
            if value is not None
        }
        body: dict[str, Any] = {"customer_id": customer_id, "explicit": explicit, "source": source}
        if traits:
            body["traits"] = traits
        if anonymous_ids:
            body["anonymous_ids"] = anonymous_ids
        if customer_ids:
            body["customer_ids"] = customer_ids
        if aliases:
            body["aliases"] = [{"kind": kind, "value": value} for kind, value in aliases.items()]
        if actor is not None:
            body["actor"] = actor
        return self._request("POST", "/v1/identify", body)  # type: ignore[no-any-return]

    def flush(self) -> list[dict[str, Any]]:
        """Send everything queued, in batches; returns the per-event results.

        Raises:
            ParcoursUnavailableError: a batch failed after every retry; it and the rest stay queued.
            ParcoursClientError: the API refused a batch (4xx); that batch is dropped, the rest stay queued.
        """
        results: list[dict[str, Any]] = []
        while True:
            with self._lock:
                batch = self._queue[: self.batch_size]
            if not batch:
                return results
            try:
                answer = self._request("POST", "/v1/events", {"events": batch})
            except ParcoursClientError:
                self._drop(batch)
                raise
            self._drop(batch)
            results.extend(answer.get("results", []))
            self.results.extend(answer.get("results", []))

    @property
    def pending(self) -> int:
        """Events queued and not yet delivered."""
        return len(self._queue)

    def close(self) -> None:
        """Flush, then close the connection pool (even when the flush fails)."""
        try:
            self.flush()
        finally:
            self._http.close()

    def __enter__(self) -> ParcoursClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------------------

    def _drop(self, batch: list[dict[str, Any]]) -> None:
        with self._lock:
            del self._queue[: len(batch)]

    def _request(self, method: str, path: str, body: Any) -> Any:
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
                time.sleep(delay * random.uniform(0.5, 1.0))
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code >= 500:
                last = f"{response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise _client_error(response)
            return response.json()
        raise ParcoursUnavailableError(f"{method} {path} failed after {self.max_retries + 1} attempts; last: {last}")


def _client_error(response: httpx.Response) -> ParcoursClientError:
    try:
        body = response.json()
        error = body.get("error", {}) if isinstance(body, dict) else {}
        return ParcoursClientError(response.status_code, error.get("message", response.text), error.get("field"), body)
    except ValueError:
        return ParcoursClientError(response.status_code, response.text[:500])
