"""What every channel adapter receives and answers.

An adapter delivers one rendered message to one provider. It raises ``PermanentDeliveryError`` when the
provider refused the message for good (bad address, 4xx from a webhook, 5xx from SMTP): the send is recorded as
failed and never retried. Any other exception (``TransientDeliveryError``, network errors, timeouts) is retried
by Temporal. Adapters pass the idempotency key on to the provider, so a retried delivery can be recognised.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field


class OutboundMessage(BaseModel):
    """A rendered message, ready for a provider."""

    idempotency_key: str
    customer_id: str
    channel: str
    recipient: str | None = None
    """Email address, phone number, device token or URL, as the channel needs; None for inbox and console."""
    kind: str = "marketing"
    topic: str | None = None
    journey_id: str
    step_id: str
    content: dict[str, Any] = Field(default_factory=dict)
    """Rendered fields: email ``subject``/``text``/``html``; sms ``text``; push ``title``/``body``;
    in_app ``title``/``body``/``data``; webhook ``payload`` (and optional ``url``)."""
    unsubscribe_url: str | None = None


class DeliveryResult(BaseModel):
    provider_message_id: str | None = None
    response: dict[str, Any] = Field(default_factory=dict)
    segments: int | None = None
    """SMS: segments the text took (recorded with the message, and what it cost)."""
    encoding: str | None = None
    """SMS: ``GSM-7`` or ``UCS-2``."""
    cost: float | None = None


class DeliveryError(Exception):
    def __init__(self, message: str, *, response: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.response = response or {}


class PermanentDeliveryError(DeliveryError):
    """The provider refused the message for good; retrying will not help."""


class TransientDeliveryError(DeliveryError):
    """The provider could not take the message now; a later attempt may succeed."""


class Channel(Protocol):
    name: str

    async def deliver(self, message: OutboundMessage) -> DeliveryResult: ...

    async def close(self) -> None: ...
