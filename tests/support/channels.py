"""Builders shared by the channel tests (tests/activities/channels): settings without a .env, an outbound message."""

from __future__ import annotations

from typing import Any

from activities.channels.base import OutboundMessage
from config.settings import Settings


def make_settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def make_message(**overrides: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "idempotency_key": "welcome:cust-1:1:send-welcome",
        "customer_id": "cust-1",
        "channel": "email",
        "recipient": "zoe@example.com",
        "journey_id": "welcome",
        "step_id": "send-welcome",
        "content": {
            "subject": "Bienvenue, Zoé",
            "text": "Hello Zoé, thanks for joining.",
            "html": "<p>Hello <b>Zoé</b>, thanks for joining.</p>",
        },
    }
    fields.update(overrides)
    return OutboundMessage(**fields)
