"""In-app inbox: the message is a row in ``inbox_messages`` that the app reads."""

from __future__ import annotations

from activities.channels.base import (
    DeliveryResult,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from store import inbox as inbox_store
from store.db import Pool


class InboxChannel:
    """Stores ``in_app`` messages; a retry with the same idempotency key finds the row stored the first time.

    The pool must come from ``store.create_pool`` (its jsonb codec takes the ``data`` dict).
    """

    name = "in_app"

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        content = message.content
        body = content.get("body")
        if not isinstance(body, str) or not body.strip():
            raise PermanentDeliveryError("in_app message has no body")
        title = content.get("title")
        data = content.get("data") or {}
        if not isinstance(data, dict):
            raise PermanentDeliveryError(f"in_app data must be an object, not {type(data).__name__}")

        inbox_id = await inbox_store.add_message(
            self._pool,
            message.customer_id,
            message.idempotency_key,
            title=None if title is None else str(title),
            body=body,
            data=data,
        )
        if inbox_id is None:
            # Delivered before (a retry, replay or reset): answer with the row stored then. A separate statement
            # so that a row committed by a concurrent delivery is visible.
            inbox_id = await inbox_store.stored_id(self._pool, message.idempotency_key)
            if inbox_id is None:
                raise TransientDeliveryError("inbox row conflicted but is gone; retry")
        return DeliveryResult(provider_message_id=f"inbox:{inbox_id}", response={"inbox_id": inbox_id})

    async def close(self) -> None:
        """Nothing to release: the pool belongs to the caller."""
