"""SMTP PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write when the server advertises it, the same message
and the same refusals as the sequential exchange, and the sequential exchange for a server that does not.

What the client writes is observed through a relay between it and the server, which notes for every chunk the
client wrote how many replies the server had sent it by then: a client that waits for each reply cannot have
written RCPT before the reply to MAIL reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import structlog

from activities.channels.base import OutboundMessage, PermanentDeliveryError, TransientDeliveryError
from activities.channels.email import SmtpEmailChannel
from tests.support.channels import make_message, make_settings
from tests.support.mail import SmtpSink


class PipeliningSink(SmtpSink):
    """The test SMTP sink, advertising PIPELINING in its EHLO answer, as Postfix or Exim do; it can refuse a
    recipient, or answer MAIL with a refusal (and hang up after it, as Postfix does after a 421)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused_recipients: dict[str, str] = {}
        self.mail_reply: str | None = None
        self.hang_up_after_mail_reply = False
        self.mail_delay = 0.0
        self.rcpt_peers: list[tuple[str, Any]] = []

    # aiosmtpd handler hooks; they run in the server's thread.
    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> Any:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply, self.mail_reply = self.mail_reply, None
        delay, self.mail_delay = self.mail_delay, 0.0
        await asyncio.sleep(delay)
        if reply is None:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            return "250 OK"
        if self.hang_up_after_mail_reply:
            await server.push(reply)
            server.transport.close()
            await asyncio.Event().wait()  # cancelled by aiosmtpd when the connection is lost
        return reply

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        self.rcpt_peers.append((address, session.peer))
        refusal = self.refused_recipients.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"


class Relay:
    """A TCP relay from ``port`` to the server, noting what the client writes and when."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.replies = 0
        """Complete replies the server has sent to clients so far."""
        self.written: list[tuple[int, bytes]] = []
        """Every chunk the client wrote, with the replies it had been sent before the relay received it."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        server_in, server_out = await asyncio.open_connection(*self._target)

        async def upstream() -> None:
            while data := await client_in.read(65536):
                self.written.append((self.replies, data))
                server_out.write(data)
                await server_out.drain()
            server_out.close()

        async def downstream() -> None:
            pending = b""
            while data := await server_in.read(65536):
                pending += data
                *lines, pending = pending.split(b"\r\n")
                self.replies += sum(1 for line in lines if line[3:4] != b"-")
                client_out.write(data)
                await client_out.drain()
            client_out.close()

        try:
            await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        finally:
            self._tasks.discard(task)

    def transcript(self) -> bytes:
        return b"".join(data for _, data in self.written)

    def replies_before(self, command: bytes) -> list[int]:
        """For each command line the client wrote that starts with ``command``: the replies it had by then."""
        return [
            replies
            for replies, data in self.written
            for line in data.split(b"\r\n")
            if line.upper().startswith(command)
        ]


@pytest_asyncio.fixture
async def pipelining_sink() -> AsyncIterator[PipeliningSink]:
    sink = PipeliningSink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


@contextlib.asynccontextmanager
async def relayed(sink: SmtpSink, smtp_timeout: float = 2.0) -> AsyncIterator[tuple[SmtpEmailChannel, Relay]]:
    """An email channel talking to ``sink`` through a relay."""
    relay = Relay(sink.host, sink.port)
    await relay.start()
    settings = make_settings(smtp_host="127.0.0.1", smtp_port=relay.port, smtp_timeout_seconds=smtp_timeout)
    channel = SmtpEmailChannel(settings)
    try:
        yield channel, relay
    finally:
        await channel.close()
        await relay.stop()


def keyed(n: int, **overrides: Any) -> OutboundMessage:
    fields = {"idempotency_key": f"welcome:cust-{n}:1:send-welcome", "recipient": f"c{n}@example.com", **overrides}
    return make_message(**fields)


def envelope_and_body(transcript: bytes) -> bytes:
    """The mail transaction as written: from MAIL to the end of the body."""
    start = transcript.index(b"MAIL FROM:")
    return transcript[start : transcript.index(b"\r\n.\r\n", start) + 5]


async def test_pipelined_message_is_written_and_received_as_the_sequential_one(
    smtp_sink: SmtpSink, pipelining_sink: PipeliningSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("activities.channels.email._date", lambda: "Mon, 30 Nov 2026 21:00:00 GMT")
    # A text-only body (no random MIME boundary) with lines that SMTP must dot-stuff.
    message = keyed(1, content={"subject": "Soldes d'hiver", "text": "Hello Zoé,\n.\n..and more\n-20% today."})
    results = []
    for sink in (smtp_sink, pipelining_sink):
        async with relayed(sink) as (channel, relay):
            results.append(await channel.deliver(message))
        [mail] = await sink.wait_for(1)
        results.append((envelope_and_body(relay.transcript()), mail.raw, mail.mail_from, mail.rcpt_tos))

    sequential, pipelined = results[1], results[3]
    assert pipelined == sequential
    assert b" SIZE=" in sequential[0].upper() and b"\r\n..\r\n...and more\r\n" in sequential[0]
    assert results[0] == results[2]  # the same Message-ID and reply
    received = pipelining_sink.messages[0].message.get_content()
    assert received.replace("\r\n", "\n") == "Hello Zoé,\n.\n..and more\n-20% today.\n"


async def test_mail_rcpt_and_data_go_out_before_the_server_answered_mail(pipelining_sink: PipeliningSink) -> None:
    async with relayed(pipelining_sink) as (channel, relay):
        await channel.deliver(keyed(1))
        await channel.deliver(keyed(2))

    await pipelining_sink.wait_for(2)
    mail, rcpt, data = relay.replies_before(b"MAIL"), relay.replies_before(b"RCPT"), relay.replies_before(b"DATA")
    assert len(mail) == len(rcpt) == len(data) == 2  # two messages on one session
    assert mail == rcpt == data
    # The body went out once the three replies were in, and the next message once the body's reply was.
    bodies = relay.replies_before(b"X-PARCOURS-IDEMPOTENCY-KEY")
    assert bodies == [mail[0] + 3, mail[1] + 3]
    assert mail[1] == bodies[0] + 1


async def test_a_server_without_pipelining_gets_one_command_at_a_time(smtp_sink: SmtpSink) -> None:
    async with relayed(smtp_sink) as (channel, relay):
        await channel.deliver(keyed(1))

    await smtp_sink.wait_for(1)
    [mail], [rcpt], [data] = relay.replies_before(b"MAIL"), relay.replies_before(b"RCPT"), relay.replies_before(b"DATA")
    [body] = relay.replies_before(b"X-PARCOURS-IDEMPOTENCY-KEY")
    assert rcpt == mail + 1 and data == rcpt + 1 and body == data + 1


async def test_refused_recipient_is_permanent_and_the_session_carries_the_next_message(
    pipelining_sink: PipeliningSink,
) -> None:
    pipelining_sink.refused_recipients["nobody@example.com"] = "550 5.1.1 <nobody@example.com>: no such user"
    async with relayed(pipelining_sink) as (channel, relay):
        with pytest.raises(PermanentDeliveryError, match=r"recipient refused: nobody@example\.com") as refused:
            await channel.deliver(keyed(1, recipient="nobody@example.com"))
        delivered = await channel.deliver(keyed(2))

    assert refused.value.response["smtp_code"] == 550
    assert "no such user" in refused.value.response["smtp_message"]
    [mail] = await pipelining_sink.wait_for(1)
    assert mail.rcpt_tos == ["c2@example.com"] and delivered.response["smtp_code"] == 250
    [(_, refused_peer), (_, next_peer)] = pipelining_sink.rcpt_peers
    assert refused_peer == next_peer  # the same pooled session, reset and still in step with the server
    assert len(relay.replies_before(b"RSET")) == 1
    assert b"no such user" not in relay.transcript()  # and no body went out for the refused one
    assert relay.transcript().count(b"X-Parcours-Idempotency-Key") == 1


async def test_a_refused_body_is_permanent_and_the_session_carries_the_next_message(
    pipelining_sink: PipeliningSink,
) -> None:
    pipelining_sink.fail(550)
    async with relayed(pipelining_sink) as (channel, _):
        with pytest.raises(PermanentDeliveryError) as refused:
            await channel.deliver(keyed(1))
        await channel.deliver(keyed(2))

    assert refused.value.response["smtp_code"] == 550
    [mail] = await pipelining_sink.wait_for(1)
    assert mail.rcpt_tos == ["c2@example.com"]
    assert mail.peer == pipelining_sink.refused[0].peer


@pytest.mark.parametrize(
    ("reply", "hang_up", "same_session"),
    [
        ("451 4.3.0 Try again later", False, True),
        ("421 4.3.2 Service shutting down", False, False),
        ("421 4.3.2 Service shutting down", True, False),
    ],
)
async def test_a_4xx_to_mail_is_transient_and_the_message_goes_out_on_the_retry(
    pipelining_sink: PipeliningSink, reply: str, hang_up: bool, same_session: bool
) -> None:
    async with relayed(pipelining_sink) as (channel, relay):
        await channel.deliver(keyed(1))
        pipelining_sink.mail_reply, pipelining_sink.hang_up_after_mail_reply = reply, hang_up
        with pytest.raises(TransientDeliveryError) as deferred:
            await channel.deliver(keyed(2))
        await channel.deliver(keyed(2))

    assert deferred.value.response["smtp_code"] == int(reply[:3])
    mails = await pipelining_sink.wait_for(2)
    assert [m.rcpt_tos for m in mails] == [["c1@example.com"], ["c2@example.com"]]
    assert (mails[0].peer == mails[1].peer) is same_session  # a 421 closes the session, a 451 keeps it
    assert relay.transcript().count(b"X-Parcours-Idempotency-Key") == 2  # nothing sent for the refused envelope


async def test_pooled_session_dropped_by_the_server_is_retried_once_fresh(pipelining_sink: PipeliningSink) -> None:
    async with relayed(pipelining_sink) as (channel, _):
        await channel.deliver(keyed(1))
        pipelining_sink.hang_up()  # our side still sees the session open: the pipelined group goes to a dead socket
        with structlog.testing.capture_logs() as logs:
            await channel.deliver(keyed(2))

    mails = await pipelining_sink.wait_for(2)
    assert [m.rcpt_tos for m in mails] == [["c1@example.com"], ["c2@example.com"]]
    assert mails[0].peer != mails[1].peer
    assert [e["event"] for e in logs] == ["idle SMTP session was gone, sending on a fresh connection"]


async def test_connection_lost_after_the_body_is_transient_and_not_retried(pipelining_sink: PipeliningSink) -> None:
    async with relayed(pipelining_sink) as (channel, _):
        await channel.deliver(keyed(1))
        pipelining_sink.hang_up_on_data()  # the server may have the message: sending it again could duplicate it
        with pytest.raises(TransientDeliveryError, match="SMTP failure"):
            await channel.deliver(keyed(2))

    assert [m.rcpt_tos for m in pipelining_sink.unanswered] == [["c2@example.com"]]
    assert len(pipelining_sink.sessions) == 1  # no second connection was opened for it


async def test_a_server_slower_than_the_timeout_is_transient_and_its_session_is_not_reused(
    pipelining_sink: PipeliningSink,
) -> None:
    async with relayed(pipelining_sink, smtp_timeout=0.3) as (channel, relay):
        await channel.deliver(keyed(1))
        pipelining_sink.mail_delay = 1.0
        with pytest.raises(TransientDeliveryError):
            await channel.deliver(keyed(2))
        await channel.deliver(keyed(3))

    mails = await pipelining_sink.wait_for(2)
    assert [m.rcpt_tos for m in mails] == [["c1@example.com"], ["c3@example.com"]]
    # Its late replies would pair with the next message's commands: the next one goes over a fresh session.
    assert mails[0].peer != mails[1].peer
    assert relay.transcript().count(b"X-Parcours-Idempotency-Key") == 2
