"""Webhooks: a signed JSON POST per message, following the Standard Webhooks spec (standardwebhooks.com).

``webhook-id`` and ``Idempotency-Key`` carry the idempotency key, so a receiver can drop a delivery it has
already processed when a retry follows a lost response.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from opentelemetry import propagate
from standardwebhooks import Webhook

from activities.channels.base import (
    DeliveryResult,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from activities.channels.egress import EgressRefusedError, guarded_client
from config.settings import Settings

# Statuses that say "not now" rather than "never".
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
MAX_RESPONSE_TEXT = 2000
# A receiver may name its own id for the delivery in this response header.
PROVIDER_ID_HEADER = "x-message-id"


def signed_headers(signer: Webhook, key: str, body: str) -> dict[str, str]:
    """Standard Webhooks headers for ``body``, with the idempotency key as the message id, and the W3C
    ``traceparent`` of the current trace (when tracing is on) so the receiver's spans join it."""
    timestamp = datetime.now(UTC).replace(microsecond=0)
    headers = {
        "content-type": "application/json",
        "webhook-id": key,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signer.sign(key, timestamp, body),
        "idempotency-key": key,
    }
    propagate.inject(headers)
    return headers


FAILURE_TEXT = 200
"""How much of a refusing endpoint's answer its failure message quotes."""


def shown_url(url: str) -> str:
    """The URL as failure messages name it: scheme, host, port and path (no credentials, no query string)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("?", 1)[0][:200]
    return f"{parts.scheme}://{host}{port}{parts.path}"


def answered(method: str, url: str, response: httpx.Response) -> str:
    """One line, cause first: ``webhook POST https://host/path answered 503: <the first 200 characters>``."""
    text = " ".join(response.text[: FAILURE_TEXT * 2].split())[:FAILURE_TEXT]
    return f"webhook {method} {shown_url(url)} answered {response.status_code}" + (f": {text}" if text else "")


def unreachable(method: str, url: str, exc: Exception) -> str:
    """One line: ``webhook POST https://host/path unreachable: ConnectError: ...``."""
    detail = " ".join(str(exc).split())[:FAILURE_TEXT]
    return f"webhook {method} {shown_url(url)} unreachable: {type(exc).__name__}" + (f": {detail}" if detail else "")


def response_body(response: httpx.Response) -> Any:
    """The parsed JSON body if it is small JSON, else the text truncated to MAX_RESPONSE_TEXT characters.

    Bounded either way: the result is stored with the message and travels in Temporal payloads.
    """
    text = response.text
    if len(text) <= MAX_RESPONSE_TEXT and "json" in response.headers.get("content-type", ""):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text[:MAX_RESPONSE_TEXT]


class WebhookChannel:
    """POSTs each message as signed JSON to the step's ``url`` or ``settings.webhook_url``."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None, *, name: str = "webhook") -> None:
        self.name = name
        self._settings = settings
        self._signer = Webhook(settings.webhook_secret.get_secret_value())
        self._owns_client = client is None
        # Any URL a journey names (or customer data fills in) is checked at connection time (channels.egress).
        self._client = client or guarded_client(settings.webhook_allow_hosts, timeout=settings.webhook_timeout_seconds)

    def _body(self, message: OutboundMessage) -> dict[str, Any]:
        content = message.content
        # The webhook channel's content is {"payload": ...}; other channels routed here send their fields.
        payload = content["payload"] if "payload" in content else {k: v for k, v in content.items() if k != "url"}
        return {
            "type": "parcours.message",
            "idempotency_key": message.idempotency_key,
            "customer_id": message.customer_id,
            "journey_id": message.journey_id,
            "step_id": message.step_id,
            "payload": payload,
        }

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        url = message.content.get("url") or self._settings.webhook_url
        if not url:
            raise PermanentDeliveryError(
                f"no webhook url: step {message.step_id!r} gives no 'url' and PARCOURS_WEBHOOK_URL is not set"
            )
        key = message.idempotency_key
        try:
            body = json.dumps(self._body(message), separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise PermanentDeliveryError(f"webhook payload is not JSON: {exc}") from exc
        try:
            response = await self._client.post(
                url, content=body.encode(), headers=signed_headers(self._signer, key, body)
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise PermanentDeliveryError(f"invalid webhook url {url!r}: {exc}") from exc
        except EgressRefusedError as exc:
            raise PermanentDeliveryError(f"webhook {url!r}: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransientDeliveryError(unreachable("POST", url, exc)) from exc

        status = response.status_code
        result: dict[str, Any] = {"status": status, "body": response_body(response)}
        if response.is_success:
            return DeliveryResult(provider_message_id=response.headers.get(PROVIDER_ID_HEADER) or key, response=result)
        if status in RETRYABLE_STATUSES or status >= 500:
            if retry_after := response.headers.get("retry-after"):
                result["retry_after"] = retry_after
            raise TransientDeliveryError(answered("POST", url, response), response=result)
        # Other 4xx, and redirects (a webhook endpoint that moved is a configuration to fix, not to follow).
        raise PermanentDeliveryError(answered("POST", url, response), response=result)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
