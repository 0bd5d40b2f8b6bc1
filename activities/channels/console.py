"""A channel that only logs: the development default for SMS and push."""

from __future__ import annotations

import structlog

from activities.channels.base import DeliveryResult, OutboundMessage


class ConsoleChannel:
    def __init__(self, name: str) -> None:
        self.name = name
        self._log = structlog.get_logger()

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        self._log.info(
            "console delivery",
            channel=self.name,
            customer_id=message.customer_id,
            recipient=message.recipient,
            idempotency_key=message.idempotency_key,
            content=message.content,
        )
        return DeliveryResult(provider_message_id=f"console:{message.idempotency_key}")

    async def close(self) -> None:
        pass
