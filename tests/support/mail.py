"""The ``smtp_sink`` fixture: a real SMTP server (``devstack.mailsink.SmtpSink``) for one test.

async def test_x(smtp_sink: SmtpSink):
    settings = Settings(smtp_host=smtp_sink.host, smtp_port=smtp_sink.port)
    ...
    [mail] = await smtp_sink.wait_for(1)
    assert mail.message["Subject"] == "Welcome"
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from devstack.mailsink import PERMANENT_REPLY, TRANSIENT_REPLY, ReceivedMail, SmtpSink
from devstack.ports import free_port


@pytest_asyncio.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    sink = SmtpSink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


__all__ = ["PERMANENT_REPLY", "TRANSIENT_REPLY", "ReceivedMail", "SmtpSink", "free_port", "smtp_sink"]
