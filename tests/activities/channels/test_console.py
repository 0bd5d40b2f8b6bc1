"""The console channel: a message is logged, not sent (the default for sms and push)."""

from __future__ import annotations

import structlog

from activities.channels.console import ConsoleChannel
from tests.support.channels import make_message


async def test_console_channel_logs_the_message() -> None:
    message = make_message(channel="sms", recipient="+33600000000", content={"text": "Your code is 1234"})
    with structlog.testing.capture_logs() as logs:
        result = await ConsoleChannel("sms").deliver(message)

    assert result.provider_message_id == "console:welcome:cust-1:1:send-welcome"
    [entry] = logs
    assert entry["channel"] == "sms"
    assert entry["customer_id"] == "cust-1"
    assert entry["recipient"] == "+33600000000"
    assert entry["idempotency_key"] == "welcome:cust-1:1:send-welcome"
    assert entry["content"] == {"text": "Your code is 1234"}
