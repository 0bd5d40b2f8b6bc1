"""The SMTP email channel: what arrives at the server, how refusals map to permanent or transient, the session pool."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiosmtplib
import pytest
import pytest_asyncio
import structlog

from activities.channels.base import (
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from activities.channels.email import SmtpEmailChannel, _smtp_error
from config.settings import Settings
from tests.support.channels import make_message, make_settings
from tests.support.mail import SmtpSink, free_port


def email_settings(sink: SmtpSink, **overrides: Any) -> Settings:
    return make_settings(smtp_host=sink.host, smtp_port=sink.port, smtp_timeout_seconds=2.0, **overrides)


EmailChannelFactory = Callable[..., SmtpEmailChannel]


@pytest_asyncio.fixture
async def email_channel(smtp_sink: SmtpSink) -> AsyncIterator[EmailChannelFactory]:
    """Opens channels on the sink (keyword arguments override settings); closes them before the sink stops."""
    opened: list[SmtpEmailChannel] = []

    def open_channel(**overrides: Any) -> SmtpEmailChannel:
        channel = SmtpEmailChannel(email_settings(smtp_sink, **overrides))
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        await channel.close()


async def test_email_arrives_with_recipient_subject_and_both_bodies(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    result = await email_channel(email_from="Parcours <hello@shop.test>").deliver(make_message())

    [mail] = await smtp_sink.wait_for(1)
    msg = mail.message
    assert mail.rcpt_tos == ["zoe@example.com"]
    assert mail.mail_from == "hello@shop.test"
    assert msg["To"] == "zoe@example.com"
    assert msg["From"] == "Parcours <hello@shop.test>"
    assert msg["Subject"] == "Bienvenue, Zoé"
    assert msg.get_content_type() == "multipart/alternative"
    text_part = msg.get_body(("plain",))
    html_part = msg.get_body(("html",))
    assert text_part is not None and html_part is not None
    assert text_part.get_content().strip() == "Hello Zoé, thanks for joining."
    assert html_part.get_content().strip() == "<p>Hello <b>Zoé</b>, thanks for joining.</p>"
    assert msg["X-Parcours-Idempotency-Key"] == "welcome:cust-1:1:send-welcome"
    assert msg["X-Parcours-Journey"] == "welcome"
    assert msg["X-Parcours-Step"] == "send-welcome"
    assert msg["List-Unsubscribe"] is None
    assert result.provider_message_id == msg["Message-ID"]
    assert result.response["smtp_code"] == 250


async def test_text_only_email_is_a_single_plain_part(smtp_sink: SmtpSink, email_channel: EmailChannelFactory) -> None:
    message = make_message(content={"subject": "Line one\r\nline two", "text": "Just text."})
    await email_channel().deliver(message)

    [mail] = await smtp_sink.wait_for(1)
    assert mail.message.get_content_type() == "text/plain"
    assert mail.message.get_content().strip() == "Just text."
    assert mail.message["Subject"] == "Line one line two"


async def test_message_id_is_derived_from_the_idempotency_key(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel(email_message_id_domain="mail.shop.test")
    key = "welcome:cust-1:1:send-welcome"
    first = await channel.deliver(make_message(idempotency_key=key))
    again = await channel.deliver(make_message(idempotency_key=key))
    other = await channel.deliver(make_message(idempotency_key="welcome:cust-1:2:send-welcome"))

    mails = await smtp_sink.wait_for(3)
    ids = [m.message["Message-ID"] for m in mails]
    expected = f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@mail.shop.test>"
    assert ids[0] == ids[1] == expected
    assert ids[2] != expected and ids[2].endswith("@mail.shop.test>")
    assert [first.provider_message_id, again.provider_message_id, other.provider_message_id] == ids


async def test_unsubscribe_headers_allow_one_click_unsubscribe(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    url = "https://journeys.shop.test/u/abc123"
    await email_channel().deliver(make_message(unsubscribe_url=url))

    [mail] = await smtp_sink.wait_for(1)
    assert mail.message["List-Unsubscribe"] == f"<{url}>"
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_550_to_data_is_permanent(smtp_sink: SmtpSink, email_channel: EmailChannelFactory) -> None:
    smtp_sink.fail(550, times=None)
    with pytest.raises(PermanentDeliveryError) as caught:
        await email_channel().deliver(make_message())

    assert caught.value.response["smtp_code"] == 550
    assert "Mailbox unavailable" in caught.value.response["smtp_message"]
    assert smtp_sink.messages == []
    assert len(smtp_sink.refused) == 1


async def test_451_is_transient_and_the_retry_carries_the_same_message_id(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel()
    smtp_sink.fail(451, times=1)
    with pytest.raises(TransientDeliveryError) as caught:
        await channel.deliver(make_message())
    assert caught.value.response["smtp_code"] == 451

    result = await channel.deliver(make_message())
    [mail] = await smtp_sink.wait_for(1)
    assert mail.message["Message-ID"] == smtp_sink.refused[0].message["Message-ID"] == result.provider_message_id


async def test_missing_email_address_is_permanent_and_sends_nothing(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    with pytest.raises(PermanentDeliveryError, match="customer has no email address"):
        await email_channel().deliver(make_message(recipient=None))
    assert smtp_sink.messages == smtp_sink.refused == []


async def test_unreachable_smtp_server_is_transient() -> None:
    settings = make_settings(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_timeout_seconds=2.0)
    with pytest.raises(TransientDeliveryError):
        await SmtpEmailChannel(settings).deliver(make_message())


def keyed(n: int) -> OutboundMessage:
    return make_message(idempotency_key=f"welcome:cust-{n}:1:send-welcome", recipient=f"c{n}@example.com")


def arrived(sink: SmtpSink, n: int) -> int:
    """How many copies of ``keyed(n)`` the sink accepted."""
    return sum(1 for m in sink.messages if m.rcpt_tos == [f"c{n}@example.com"])


async def wait_for_open_sessions(sink: SmtpSink, at_most: int) -> None:
    """Wait until the server has at most ``at_most`` connections open (QUIT ends them a moment after the reply)."""
    for _ in range(250):
        if sink.open_sessions <= at_most:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the SMTP sink still has {sink.open_sessions} connections open, expected {at_most}")


async def test_deliveries_in_sequence_share_one_smtp_session(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel()
    for n in range(4):
        await channel.deliver(keyed(n))

    mails = await smtp_sink.wait_for(4)
    assert [m.rcpt_tos for m in mails] == [[f"c{n}@example.com"] for n in range(4)]
    assert len(smtp_sink.sessions) == 1
    assert smtp_sink.open_sessions == 1  # kept open for the next delivery


async def test_pool_size_zero_opens_and_quits_one_connection_per_delivery(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel(smtp_pool_size=0)
    for n in range(3):
        await channel.deliver(keyed(n))

    await smtp_sink.wait_for(3)
    assert len(smtp_sink.sessions) == 3
    await wait_for_open_sessions(smtp_sink, 0)  # each one QUIT after its message


async def test_concurrent_deliveries_never_share_a_session(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel()
    await asyncio.gather(*(channel.deliver(keyed(n)) for n in range(5)))
    await asyncio.gather(*(channel.deliver(keyed(n)) for n in range(5, 10)))

    mails = await smtp_sink.wait_for(10)
    assert all(arrived(smtp_sink, n) == 1 for n in range(10))
    assert len({m.peer for m in mails[:5]}) == 5  # five at once need five sessions
    assert len({m.peer for m in mails[5:]}) == 5  # the next five reuse them, one each
    assert len(smtp_sink.sessions) == 5


async def test_pool_keeps_at_most_pool_size_idle_sessions(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel(smtp_pool_size=2)
    await asyncio.gather(*(channel.deliver(keyed(n)) for n in range(5)))
    assert len(smtp_sink.sessions) == 5
    await wait_for_open_sessions(smtp_sink, 2)  # the three that found the pool full were QUIT

    await asyncio.gather(*(channel.deliver(keyed(n)) for n in range(5, 10)))
    await smtp_sink.wait_for(10)
    assert len(smtp_sink.sessions) == 5 + 3


async def test_idle_session_older_than_idle_seconds_is_closed_not_reused(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel(smtp_idle_seconds=0.5)
    await channel.deliver(keyed(0))
    await asyncio.sleep(0.7)
    await channel.deliver(keyed(1))
    await channel.deliver(keyed(2))

    mails = await smtp_sink.wait_for(3)
    assert mails[0].peer != mails[1].peer == mails[2].peer
    assert smtp_sink.open_sessions == 1


async def test_a_session_is_replaced_after_max_messages(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel(smtp_session_max_messages=2)
    for n in range(5):
        await channel.deliver(keyed(n))

    mails = await smtp_sink.wait_for(5)
    assert mails[0].peer == mails[1].peer != mails[2].peer == mails[3].peer != mails[4].peer
    assert len(smtp_sink.sessions) == 3
    await wait_for_open_sessions(smtp_sink, 1)  # the worn ones were QUIT, the last is kept for the next delivery


async def test_a_session_older_than_max_seconds_is_replaced_however_busy(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel(smtp_session_max_seconds=0.5)
    await channel.deliver(keyed(0))
    await channel.deliver(keyed(1))
    await asyncio.sleep(0.6)
    await channel.deliver(keyed(2))

    mails = await smtp_sink.wait_for(3)
    assert mails[0].peer == mails[1].peer != mails[2].peer


async def test_delivery_after_a_server_restart_goes_over_a_fresh_connection(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel()
    await channel.deliver(keyed(0))
    await smtp_sink.restart()  # same port; the pooled session died with the old server

    await channel.deliver(keyed(1))
    await smtp_sink.wait_for(2)
    assert arrived(smtp_sink, 0) == arrived(smtp_sink, 1) == 1
    assert len(smtp_sink.sessions) == 2


async def test_session_dropped_by_the_server_as_the_delivery_starts_is_retried_once_fresh(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel()
    await channel.deliver(keyed(0))
    smtp_sink.hang_up()  # the pooled session still looks connected on our side: MAIL goes out on a dead socket

    with structlog.testing.capture_logs() as logs:
        result = await channel.deliver(keyed(1))

    await smtp_sink.wait_for(2)
    assert arrived(smtp_sink, 1) == 1 and smtp_sink.refused == []
    assert result.response["smtp_code"] == 250
    assert len(smtp_sink.sessions) == 2
    assert [e["event"] for e in logs] == ["idle SMTP session was gone, sending on a fresh connection"]


async def test_connection_lost_after_the_message_was_sent_is_not_retried(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel()
    await channel.deliver(keyed(0))
    smtp_sink.hang_up_on_data()  # the server may have the message: sending it again could duplicate it
    with pytest.raises(TransientDeliveryError, match="SMTP failure"):
        await channel.deliver(keyed(1))

    assert [m.rcpt_tos for m in smtp_sink.unanswered] == [["c1@example.com"]]
    assert arrived(smtp_sink, 1) == 0
    assert len(smtp_sink.sessions) == 1  # no second connection was opened for it


async def test_refusal_on_a_reused_session_is_not_retried_and_keeps_the_session(
    smtp_sink: SmtpSink, email_channel: EmailChannelFactory
) -> None:
    channel = email_channel()
    await channel.deliver(keyed(0))
    smtp_sink.fail(451, times=1)
    with pytest.raises(TransientDeliveryError):
        await channel.deliver(keyed(1))
    assert len(smtp_sink.refused) == 1  # the server answered DATA: no second attempt from the channel

    await channel.deliver(keyed(1))
    await smtp_sink.wait_for(2)
    assert arrived(smtp_sink, 1) == 1
    assert len(smtp_sink.sessions) == 1


async def test_close_quits_the_idle_sessions(smtp_sink: SmtpSink, email_channel: EmailChannelFactory) -> None:
    channel = email_channel()
    await asyncio.gather(*(channel.deliver(keyed(n)) for n in range(3)))
    assert smtp_sink.open_sessions == 3

    await channel.close()
    await wait_for_open_sessions(smtp_sink, 0)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b")]),
         PermanentDeliveryError),
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(450, "greylisted", "a@b")]),
         TransientDeliveryError),
        (aiosmtplib.SMTPSenderRefused(553, "sender not allowed", "x@y"), PermanentDeliveryError),
        (aiosmtplib.SMTPSenderRefused(421, "try later", "x@y"), TransientDeliveryError),
        (aiosmtplib.SMTPDataError(554, "spam"), PermanentDeliveryError),
        (aiosmtplib.SMTPDataError(452, "mailbox full"), TransientDeliveryError),
        (aiosmtplib.SMTPResponseException(552, "too big"), PermanentDeliveryError),
        (aiosmtplib.SMTPHeloError(501, "bad helo"), TransientDeliveryError),
        (aiosmtplib.SMTPServerDisconnected("gone"), TransientDeliveryError),
        (aiosmtplib.SMTPReadTimeoutError("slow"), TransientDeliveryError),
    ],
)  # fmt: skip
def test_smtp_replies_map_to_permanent_or_transient(error: aiosmtplib.SMTPException, expected: type) -> None:
    assert type(_smtp_error(error)) is expected
