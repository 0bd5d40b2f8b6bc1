"""A fake APNs provider API: HTTP/2 over TLS on loopback, written with ``h2`` from Apple's public documentation.

"Sending notification requests to APNs" and "Establishing a token-based connection to APNs" describe what this
checks, per request, in this order:

- TLS 1.2 or later with ALPN ``h2`` (a client that does not negotiate HTTP/2 is dropped before any frame);
- ``:method`` ``POST`` (else ``405 MethodNotAllowed``) and ``:path`` ``/3/device/<device token>`` (else
  ``404 BadPath``);
- ``authorization: bearer <JWT>``: missing is ``403 MissingProviderToken``; the JWT must have ``alg`` ``ES256`` and
  ``kid`` = the key id in its header, ``iss`` = the team id and ``iat`` in its claims, and verify with the public
  key of the signing key, with an ``iat`` not in the future (else ``403 InvalidProviderToken``); an ``iat`` over
  an hour old is ``403 ExpiredProviderToken``; a NEW valid token less than 20 minutes after the previous one is ``429
  TooManyProviderTokenUpdates`` (Apple asks providers to renew no more than every 20 minutes);
- ``apns-topic`` = the bundle id (missing: ``400 MissingTopic``; another: ``400 DeviceTokenNotForTopic``);
  ``apns-push-type`` ``alert`` (else ``400 InvalidPushType``); ``apns-priority`` 5 or 10 (``BadPriority``);
  ``apns-id`` a canonical lowercase UUID (``BadMessageId``); ``apns-collapse-id`` at most 64 bytes
  (``BadCollapseId``); ``apns-expiration`` an integer (``BadExpirationDate``);
- the payload: at most 4096 bytes (``413 PayloadTooLarge``), not empty (``400 PayloadEmpty``), a JSON object whose
  ``aps.alert`` has string ``title`` and ``body`` (an alert push needs one; Apple documents no reason for a
  malformed payload, the fake answers ``400 BadPayload``);
- the device token: hex (else ``400 BadDeviceToken``), not one the test marked ``bad_tokens`` (``400
  BadDeviceToken``), ``other_topic_tokens`` (``400 DeviceTokenNotForTopic``: the token was issued to another app,
  not to the topic's) or ``dead_tokens`` (``410 Unregistered`` with the ``timestamp``, in milliseconds, since when
  the token is no longer valid);
- ``unavailable``: a token's next requests answer ``503 ServiceUnavailable`` (APNs overloaded), after the checks
  above.

A push that passes answers ``200`` with an empty body and an ``apns-id`` header (the request's, or a new UUID).
Error bodies are ``{"reason": ...}`` JSON, as Apple's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEVICE_PATH = re.compile(r"^/3/device/([^/?]+)$")
HEX = re.compile(r"^[0-9a-fA-F]+$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PUSH_TYPES = {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity"}
TOKEN_MAX_AGE = 3600
TOKEN_MIN_RENEWAL = 20 * 60
MAX_PAYLOAD = 4096


@dataclass(frozen=True)
class ApnsPush:
    """One notification APNs accepted."""

    device_token: str
    headers: dict[str, str]
    payload: dict[str, Any]
    provider_token: str


@dataclass(frozen=True)
class Tls:
    """A test certificate authority and the fake's certificate (127.0.0.1 and localhost), as PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def make(cls, directory: Path) -> Tls:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Parcours test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        tls = cls(directory / "apns-ca.pem", directory / "apns-cert.pem", directory / "apns-key.pem")
        tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        tls.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return tls

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        context.set_alpn_protocols(["h2"])
        return context


def signing_key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """A token-authentication key as Apple's developer account hands it out (``AuthKey_<key id>.p8``)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass
class ApnsFake:
    team_id: str = "TEAM123456"
    key_id: str = "KEY1234567"
    topic: str = "com.example.shop"
    url: str = ""
    dead_tokens: set[str] = field(default_factory=set)
    """Tokens APNs answers 410 Unregistered for (the app was uninstalled)."""
    bad_tokens: set[str] = field(default_factory=set)
    """Tokens APNs answers 400 BadDeviceToken for (e.g. a sandbox token sent to production)."""
    other_topic_tokens: set[str] = field(default_factory=set)
    """Tokens of another app (another bundle id): APNs answers 400 DeviceTokenNotForTopic."""
    unavailable: dict[str, int] = field(default_factory=dict)
    """Token -> how many more requests to it answer 503 ServiceUnavailable before it is served."""
    received: list[ApnsPush] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    """(status, reason) of every request refused."""
    provider_tokens: list[str] = field(default_factory=list)
    """Every distinct valid provider token, in order of first use."""
    presented_tokens: list[str] = field(default_factory=list)
    """Every distinct bearer token presented, valid or not, in order of first use."""
    clock: Callable[[], float] = time.time
    """APNs' clock (token age, the 20-minute renewal rule, 410 timestamps); a test may move it."""
    connections: int = 0
    signing_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    _token_since: float = 0.0
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def key_file(self, directory: Path) -> Path:
        path = directory / f"AuthKey_{self.key_id}.p8"
        path.write_text(signing_key_pem(self.signing_key))
        return path

    def settings(self, directory: Path, tls: Tls | None) -> dict[str, Any]:
        """The APNs settings of a Parcours that sends to this fake (its key written in ``directory``) and trusts
        ``tls``'s CA (None: the system's, which does not know it)."""
        return {
            "apns_key_file": self.key_file(directory),
            "apns_key_id": self.key_id,
            "apns_team_id": self.team_id,
            "apns_topic": self.topic,
            "apns_base_url": self.url,
            "apns_ca_file": tls.ca_file if tls is not None else None,
        }

    # --- the connection -----------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            writer.close()
            return
        self.connections += 1
        self._writers.add(writer)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            await writer.drain()
            while not reader.at_eof():
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        headers = {str(k): str(v) for k, v in event.headers or []}
                        requests[event.stream_id or 0] = (headers, bytearray())
                    elif isinstance(event, h2.events.DataReceived) and event.stream_id in requests:
                        requests[event.stream_id][1].extend(event.data or b"")
                        conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in requests:
                        headers, body = requests.pop(event.stream_id)
                        status, extra, answer = self.handle(headers, bytes(body))
                        conn.send_headers(
                            event.stream_id,
                            [(":status", str(status)), *extra.items()]
                            + ([("content-type", "application/json")] if answer else []),
                            end_stream=not answer,
                        )
                        if answer:
                            conn.send_data(event.stream_id, answer, end_stream=True)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    # --- one request --------------------------------------------------------------------------------------------

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Apple's checks on one request: (status, response headers, response body)."""
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        status, reason, extra = self._check(headers, body)
        if status == 200:
            return 200, {"apns-id": apns_id}, b""
        self.refused.append((status, reason))
        return status, {"apns-id": apns_id}, json.dumps({"reason": reason, **extra}).encode()

    def _check(self, headers: dict[str, str], body: bytes) -> tuple[int, str, dict[str, Any]]:
        if headers.get(":method") != "POST":
            return 405, "MethodNotAllowed", {}
        match = DEVICE_PATH.match(headers.get(":path", ""))
        if match is None:
            return 404, "BadPath", {}
        device_token = match.group(1)
        refused = self._check_provider_token(headers.get("authorization"))
        if refused is not None:
            return refused[0], refused[1], {}
        topic = headers.get("apns-topic")
        if not topic:
            return 400, "MissingTopic", {}
        if topic != self.topic:
            return 400, "DeviceTokenNotForTopic", {}
        push_type = headers.get("apns-push-type")
        if push_type not in PUSH_TYPES or push_type != "alert":
            return 400, "InvalidPushType", {}
        if headers.get("apns-priority", "10") not in ("5", "10"):
            return 400, "BadPriority", {}
        if "apns-id" in headers and not UUID.match(headers["apns-id"]):
            return 400, "BadMessageId", {}
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return 400, "BadCollapseId", {}
        if "apns-expiration" in headers and not headers["apns-expiration"].isdigit():
            return 400, "BadExpirationDate", {}
        if len(body) > MAX_PAYLOAD:
            return 413, "PayloadTooLarge", {}
        if not body:
            return 400, "PayloadEmpty", {}
        try:
            payload = json.loads(body)
            alert = payload["aps"]["alert"]
            assert isinstance(alert["title"], str) and isinstance(alert["body"], str)
        except (ValueError, KeyError, TypeError, AssertionError):
            return 400, "BadPayload", {}
        if not HEX.match(device_token) or device_token in self.bad_tokens:
            return 400, "BadDeviceToken", {}
        if device_token in self.other_topic_tokens:
            return 400, "DeviceTokenNotForTopic", {}
        if device_token in self.dead_tokens:
            return 410, "Unregistered", {"timestamp": int(self.clock() * 1000)}
        if self.unavailable.get(device_token, 0) > 0:
            self.unavailable[device_token] -= 1
            return 503, "ServiceUnavailable", {}
        self.received.append(ApnsPush(device_token, headers, payload, headers["authorization"].split(" ", 1)[1]))
        return 200, "", {}

    def _check_provider_token(self, authorization: str | None) -> tuple[int, str] | None:
        if not authorization:
            return 403, "MissingProviderToken"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return 403, "InvalidProviderToken"
        if token not in self.presented_tokens:
            self.presented_tokens.append(token)
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self.signing_key.public_key(),
                algorithms=["ES256"],
                issuer=self.team_id,
                options={"require": ["iss", "iat"]},
            )
        except jwt.PyJWTError:
            return 403, "InvalidProviderToken"
        if header.get("alg") != "ES256" or header.get("kid") != self.key_id or not isinstance(claims["iat"], int):
            return 403, "InvalidProviderToken"
        now = self.clock()
        if claims["iat"] > now + 60:
            return 403, "InvalidProviderToken"
        if claims["iat"] < now - TOKEN_MAX_AGE:
            return 403, "ExpiredProviderToken"
        if token not in self.provider_tokens:
            if self.provider_tokens and now - self._token_since < TOKEN_MIN_RENEWAL:
                return 429, "TooManyProviderTokenUpdates"
            self.provider_tokens.append(token)
            self._token_since = now
        return None


@contextlib.asynccontextmanager
async def running_apns(directory: Path, fake: ApnsFake | None = None) -> AsyncIterator[tuple[ApnsFake, Tls]]:
    """Serve a fake APNs over TLS (a certificate made now, under ``directory``) on a free loopback port; yields the
    fake (``url`` set) and its TLS files (``ca_file`` is what a client must trust)."""
    fake = fake or ApnsFake()
    tls = Tls.make(directory)
    server = await asyncio.start_server(fake._connection, "127.0.0.1", 0, ssl=tls.server_context())
    port = server.sockets[0].getsockname()[1]
    fake.url = f"https://127.0.0.1:{port}"
    try:
        yield fake, tls
    finally:
        server.close()
        for writer in list(fake._writers):
            writer.close()
        await server.wait_closed()
