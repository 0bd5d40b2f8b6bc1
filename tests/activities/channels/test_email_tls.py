"""Email over STARTTLS, as relays on port 587 (SES, SendGrid, Postfix submission) require: the session upgrades to
TLS, checks the server's certificate, and still pipelines its commands when the server offers PIPELINING.

The server is aiosmtpd refusing mail before STARTTLS, with a certificate of its own issued for 127.0.0.1; the
client trusts it through ``SSL_CERT_FILE``, as an operator trusting a private relay's CA would.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from activities.channels.base import TransientDeliveryError
from activities.channels.email import SmtpEmailChannel
from tests.activities.channels.test_email_pipelining import PipeliningSink, keyed
from tests.support.channels import make_settings


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "parcours test relay")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "relay.pem", folder / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class TlsSink(PipeliningSink):
    """The pipelining sink behind STARTTLS (required), noting for each MAIL whether the client's RCPT had already
    arrived: only a pipelining client sends it before the reply to MAIL."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        super().__init__()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        self._controller = Controller(
            self, hostname=self.host, port=self.port, tls_context=context, require_starttls=True
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
    cert_file, key_file = certificate(tmp_path)
    sink = TlsSink(cert_file, key_file)
    await sink.start()
    try:
        yield sink, cert_file
    finally:
        await sink.stop()


async def test_starttls_checks_the_certificate_and_still_pipelines(
    tls_sink: tuple[TlsSink, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, cert_file = tls_sink
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
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
