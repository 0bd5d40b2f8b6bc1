"""The email written directly as bytes (``wire_email``, the broadcast's hot path) reads, once parsed by a mail
client, exactly as the one ``email``'s objects build (``build_email``); what it cannot write as it is goes the
old way."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from email.policy import default as default_policy
from typing import Any, cast

import pytest

from activities.channels.base import OutboundMessage
from activities.channels.email import build_email, wire_email
from tests.support.channels import make_message, make_settings

SETTINGS = make_settings(email_from="Parcours Shop <hello@shop.test>", email_message_id_domain="shop.test")


READ_HEADERS = (
    "From",
    "To",
    "Subject",
    "Message-ID",
    "X-Parcours-Idempotency-Key",
    "X-Parcours-Journey",
    "X-Parcours-Step",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)


def parsed(data: bytes) -> EmailMessage:
    return cast(EmailMessage, message_from_bytes(data, policy=default_policy))


def as_read(msg: EmailMessage) -> dict[str, Any]:
    """What a mail client shows: headers (decoded) and each part's type and text."""
    headers = {name: str(msg[name]) for name in READ_HEADERS}
    parts = [(p.get_content_type(), p.get_content()) for p in msg.walk() if not p.is_multipart()]
    return {"headers": headers, "type": msg.get_content_type(), "parts": parts}


LONG_LINE = "<p>" + "Soldes d'hiver à -20 % sur tout le magasin, " * 40 + "</p>"
CASES = {
    "both bodies, accents": {},
    "text only": {"content": {"subject": "Hello", "text": "Plain ASCII.\n.\nA line that is a dot."}},
    "html only, a line longer than 998": {"content": {"subject": "Long", "html": LONG_LINE}},
    "unsubscribe headers": {"unsubscribe_url": "https://shop.test/u/" + "x" * 200},
    "subject of 950 characters": {"content": {"subject": "s" * 950, "text": "t"}},
    "emoji and CJK": {"content": {"subject": "🎉 限时优惠", "text": "价格 🎉\r\nline two", "html": "<b>限时</b>"}},
}


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_the_wire_message_reads_as_the_built_one(overrides: dict[str, Any]) -> None:
    message = make_message(**overrides)
    wire = wire_email(message, SETTINGS)
    assert wire is not None
    assert wire.sender == "hello@shop.test" and wire.recipient == message.recipient
    built = build_email(message, SETTINGS)
    assert as_read(parsed(wire.data)) == as_read(parsed(built.as_bytes(policy=SMTP)))
    assert wire.message_id == built["Message-ID"]
    assert all(len(line) <= 998 for line in wire.data.split(b"\r\n"))
    assert wire.data.isascii()


@pytest.mark.parametrize(
    "message",
    [
        make_message(recipient="zoé@exemple.fr"),
        make_message(recipient='"odd name"@example.com'),
        make_message(journey_id="été"),
    ],
    ids=["non-ASCII address", "quoted local part", "non-ASCII journey id"],
)
def test_what_it_cannot_write_as_it_is_goes_through_the_email_package(message: OutboundMessage) -> None:
    assert wire_email(message, SETTINGS) is None
    assert build_email(message, SETTINGS)["To"] is not None


def test_a_display_name_that_is_not_plain_ascii_goes_through_the_email_package() -> None:
    assert wire_email(make_message(), make_settings(email_from="Boutique Zoé <hello@shop.test>")) is None
