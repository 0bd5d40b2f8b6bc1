"""Email over STARTTLS, as relays on port 587 (SES, SendGrid, Postfix submission) require: the session upgrades to
TLS, checks the server's certificate, and still pipelines its commands when the server offers PIPELINING.

The server is aiosmtpd refusing mail before STARTTLS, with a certificate for 127.0.0.1 from a test CA (the one the
APNs fake uses); the client trusts that CA through ``SSL_CERT_FILE``, as an operator of a private relay would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller

from activities.channels.base import TransientDeliveryError
from activities.channels.email import SmtpEmailChannel
from tests.activities.channels.test_email_pipelining import PipeliningSink, keyed
from tests.support.apns import Tls
from tests.support.channels import make_settings


class TlsSink(PipeliningSink):
    """The pipelining sink behind STARTTLS (required), noting for each MAIL whether the client's RCPT had already
    arrived: only a pipelining client sends it before the reply to MAIL."""

    def __init__(self, tls: Tls) -> None:
        super().__init__()
        self._controller = Controller(
            self, hostname=self.host, port=self.port, tls_context=tls.server_context(), require_starttls=True
        )
        self.tls_sessions: list[bool] = []
        self.rcpt_already_sent: list[bool] = []

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        self.tls_sessions.append(session.ssl is not None)
        # What the client wrote after MAIL and the server has received but not read yet (aiosmtpd reads a line at
        # a time from its StreamReader).
        self.rcpt_already_sent.append(b"RCPT TO:" in bytes(server._reader._buffer).upper())
        return await super().handle_MAIL(server, session, envelope, address, options)


@pytest_asyncio.fixture
async def tls_sink(tmp_path: Path) -> AsyncIterator[tuple[TlsSink, Path]]:
    tls = Tls.make(tmp_path)
    sink = TlsSink(tls)
    await sink.start()
    try:
        yield sink, tls.ca_file
    finally:
        await sink.stop()


async def test_starttls_checks_the_certificate_and_still_pipelines(
    tls_sink: tuple[TlsSink, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, ca_file = tls_sink
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    channel = SmtpEmailChannel(make_settings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_starttls=True))
    try:
        await channel.deliver(keyed(1))
        await channel.deliver(keyed(2))  # on the same (pooled) TLS session
    finally:
        await channel.close()

    mails = await sink.wait_for(2)
    assert sorted(r for m in mails for r in m.rcpt_tos) == ["c1@example.com", "c2@example.com"]
    assert len({m.peer for m in mails}) == 1
    assert sink.tls_sessions == [True, True]
    assert sink.rcpt_already_sent == [True, True]


async def test_a_relay_whose_certificate_is_not_trusted_gets_no_mail(tls_sink: tuple[TlsSink, Path]) -> None:
    sink, _ = tls_sink
    channel = SmtpEmailChannel(make_settings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_starttls=True))
    try:
        with pytest.raises(TransientDeliveryError, match="cannot open an SMTP session"):
            await channel.deliver(keyed(1))
    finally:
        await channel.close()
    assert sink.messages == [] and sink.tls_sessions == []
