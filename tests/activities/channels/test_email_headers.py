"""List-Unsubscribe goes out as ``<url>`` on the wire, whatever the URL's length (RFC 2369, RFC 8058)."""

from __future__ import annotations

import re

from activities.channels.base import OutboundMessage
from activities.channels.email import SmtpEmailChannel
from config.settings import Settings
from tests.support.mail import SmtpSink


def raw_header(raw: bytes, name: str) -> bytes:
    """The header as the SMTP server received it, continuation lines included."""
    head = raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
    match = re.search(rb"^" + name.encode() + rb":(.*(?:\n[ \t].*)*)", head, re.MULTILINE | re.IGNORECASE)
    assert match is not None, head.decode(errors="replace")
    return match.group(1)


async def test_list_unsubscribe_is_a_plain_angle_bracketed_url_on_the_wire(smtp_sink: SmtpSink) -> None:
    # A sealed token is long and has no spaces: the library folded it into an RFC 2047 word before.
    url = "https://journeys.shop.test/v1/unsubscribe/" + "v2.Q2hhbm5lbC1lbWFpbC1jdXN0b21lci0x_-" * 8
    channel = SmtpEmailChannel(
        Settings(_env_file=None, smtp_host=smtp_sink.host, smtp_port=smtp_sink.port)  # type: ignore[call-arg]
    )
    try:
        await channel.deliver(
            OutboundMessage(
                idempotency_key="j:c:1:mail",
                customer_id="c",
                channel="email",
                recipient="ada@example.com",
                journey_id="j",
                step_id="mail",
                content={"subject": "Hello", "text": "Hi"},
                unsubscribe_url=url,
            )
        )
    finally:
        await channel.close()
    [mail] = await smtp_sink.wait_for(1)
    value = raw_header(mail.raw, "List-Unsubscribe")
    assert b"=?" not in value
    assert value.strip() == f"<{url}>".encode()
    assert raw_header(mail.raw, "List-Unsubscribe-Post").strip() == b"List-Unsubscribe=One-Click"
