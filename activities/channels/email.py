"""Email over SMTP.

The Message-ID is derived from the idempotency key, so a delivery retried after a lost reply carries the same
id and the receiving side (or a later audit) can recognise the duplicate. Authenticated SMTP sessions are pooled
per channel and reused across deliveries (``smtp_pool_size``, ``smtp_idle_seconds``). With a server that
advertises PIPELINING (RFC 2920), MAIL, RCPT and DATA go out in one write: two round trips per message, not four.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from email import quoprimime
from email.header import Header
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from email.policy import default as default_policy
from email.utils import formatdate, parseaddr
from functools import lru_cache
from typing import Any

import aiosmtplib
import structlog
from aiosmtplib.protocol import (
    MAX_RESPONSE_LENGTH,
    PERIOD_REGEX,
    SMTPProtocol,
    normalize_message_line_endings,
)
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import SMTPStatus

from activities.channels.base import (
    DeliveryError,
    DeliveryResult,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from config.settings import Settings

log = structlog.get_logger()

_LINE_BREAKS = re.compile(r"[\r\n]+\s*")


class UnfoldedHeader(UnstructuredHeader):
    """A header written on one line as it is. ``email`` folds a long value at 78 characters, and a value it cannot
    break, such as List-Unsubscribe's ``<https://...>``, becomes RFC 2047 encoded words (``=?utf-8?q?=3Chttps...``)
    that mail providers do not parse, so one-click unsubscribe (RFC 8058) breaks. Used for values we build
    ourselves (ASCII, no line breaks, well under RFC 5322's 998)."""

    def fold(self, *, policy: Policy) -> str:
        # The registry mixes this class with BaseHeader, which gives it ``name``.
        return f"{self.name}: {_one_line(str(self))}{policy.linesep}"  # type: ignore[attr-defined]


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("list-unsubscribe", UnfoldedHeader)  # type: ignore[arg-type]  # a mixin, as the stdlib's
MAIL_POLICY = default_policy.clone(header_factory=_HEADERS)
"""The messages' policy: List-Unsubscribe is never folded (aiosmtplib flattens with its own SMTP policy, which
asks each header object to fold itself)."""


def message_id_for(idempotency_key: str, domain: str) -> str:
    """The Message-ID every attempt to deliver this idempotency key carries."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def _one_line(value: str) -> str:
    # A rendered subject may contain a line break; as a header it would be rejected (or worse, injected).
    return _LINE_BREAKS.sub(" ", value).strip()


def build_email(message: OutboundMessage, settings: Settings) -> EmailMessage:
    """The MIME message for ``message``; raises PermanentDeliveryError when it cannot be built."""
    if not message.recipient:
        raise PermanentDeliveryError("customer has no email address")
    text = message.content.get("text")
    html = message.content.get("html")
    if not text and not html:
        raise PermanentDeliveryError("email has neither a text nor an html body")
    try:
        email = EmailMessage(policy=MAIL_POLICY)
        email["From"] = settings.email_from
        email["To"] = message.recipient
        email["Subject"] = _one_line(str(message.content.get("subject") or ""))
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = message_id_for(message.idempotency_key, settings.email_message_id_domain)
        email["X-Parcours-Idempotency-Key"] = message.idempotency_key
        email["X-Parcours-Journey"] = message.journey_id
        email["X-Parcours-Step"] = message.step_id
        if message.unsubscribe_url:
            email["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if text:
            email.set_content(str(text))
            if html:
                email.add_alternative(str(html), subtype="html")
        else:
            email.set_content(str(html), subtype="html")
    except (ValueError, TypeError) as exc:
        raise PermanentDeliveryError(f"cannot build email: {exc}") from exc
    return email


@dataclass(frozen=True)
class WireEmail:
    """A message written straight to its SMTP form: the envelope and the bytes ``build_email`` would send."""

    sender: str
    recipient: str
    data: bytes
    message_id: str


# What the quick writer takes as it is: an ASCII address with nothing to quote, and header values of printable
# ASCII well under RFC 5322's 998 characters. Anything else goes through ``build_email``.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
_PLAIN_VALUE = re.compile(r"[\x20-\x7e]{0,900}")
_SEVEN_BIT_LINE_LIMIT = 998
_CRLF = "\r\n"
_LINE_END = re.compile(r"\r\n|\r|\n")


def _plain(value: str) -> bool:
    return _PLAIN_VALUE.fullmatch(value) is not None


def _header(name: str, value: str) -> str:
    """One header line: the value as it is when it is printable ASCII, else RFC 2047 encoded words (folded)."""
    if _plain(value):
        return f"{name}: {value}\r\n"
    encoded = Header(value, "utf-8", header_name=name).encode(linesep=_CRLF)
    return f"{name}: {encoded}{_CRLF}"


def _part(body: str, subtype: str) -> str:
    """A text part's headers and body: 7bit when it is ASCII in short lines, else quoted-printable UTF-8."""
    if not body.endswith("\n"):
        body += "\n"
    lines = _LINE_END.split(body)
    if body.isascii() and max(map(len, lines)) <= _SEVEN_BIT_LINE_LIMIT:
        encoding, encoded = "7bit", _CRLF.join(lines)
    else:
        encoding = "quoted-printable"
        encoded = quoprimime.body_encode(body.encode("utf-8").decode("latin-1"), eol="\r\n")
        if not encoded.endswith("\n"):
            encoded += "\r\n"
    return f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n{encoded}'


def wire_email(message: OutboundMessage, settings: Settings) -> WireEmail | None:
    """``build_email``'s message written directly as bytes (several times cheaper than ``email``'s objects and
    generator), or None when it needs ``build_email``: an address that is not plain ASCII (SMTPUTF8, quoting),
    a header value we do not write ourselves as it is (a journey or step id, From, with non-ASCII or control
    characters). The subject may be any text (RFC 2047); bodies are 7bit or quoted-printable.

    Raises PermanentDeliveryError as ``build_email`` does (no address, no body).
    """
    if not message.recipient:
        raise PermanentDeliveryError("customer has no email address")
    text = message.content.get("text")
    html = message.content.get("html")
    if not text and not html:
        raise PermanentDeliveryError("email has neither a text nor an html body")
    sender = _envelope_sender(settings.email_from)
    fixed = [settings.email_from, message.idempotency_key, message.journey_id, message.step_id]
    if message.unsubscribe_url:
        fixed.append(message.unsubscribe_url)
    if sender is None or _PLAIN_ADDRESS.fullmatch(message.recipient) is None or not all(map(_plain, fixed)):
        return None
    message_id = message_id_for(message.idempotency_key, settings.email_message_id_domain)
    head = [
        _header("From", settings.email_from),
        _header("To", message.recipient),
        _header("Subject", _one_line(str(message.content.get("subject") or ""))),
        _header("Date", _date()),
        _header("Message-ID", message_id),
        _header("X-Parcours-Idempotency-Key", message.idempotency_key),
        _header("X-Parcours-Journey", message.journey_id),
        _header("X-Parcours-Step", message.step_id),
    ]
    if message.unsubscribe_url:
        head.append(_header("List-Unsubscribe", f"<{message.unsubscribe_url}>"))
        head.append(_header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    head.append("MIME-Version: 1.0\r\n")
    if text and html:
        parts = [_part(str(text), "plain"), _part(str(html), "html")]
        boundary = "===============" + secrets.token_hex(12) + "=="
        while any(boundary in p for p in parts):  # 96 random bits: practically never
            boundary = "===============" + secrets.token_hex(12) + "=="
        body = f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        # The line break before a delimiter belongs to the delimiter (RFC 2046): each part keeps its own last one.
        body += "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n"
    else:
        body = _part(str(text or html), "plain" if text else "html")
    return WireEmail(sender, message.recipient, ("".join(head) + body).encode("ascii"), message_id)


_last_date: tuple[int, str] = (0, "")


def _date() -> str:
    """``formatdate(usegmt=True)``, the Date header of a message sent now, formatted once per second (a broadcast
    sends hundreds of messages in one)."""
    global _last_date
    second = int(time.time())
    if _last_date[0] != second:
        _last_date = (second, formatdate(second, usegmt=True))
    return _last_date[1]


@lru_cache(maxsize=16)
def _envelope_sender(email_from: str) -> str | None:
    """The address of ``email_from`` (``Shop <hello@shop.test>``: ``hello@shop.test``), if plain ASCII."""
    address = parseaddr(email_from)[1]
    return address if _PLAIN_ADDRESS.fullmatch(address) else None


def _smtp_error(exc: aiosmtplib.SMTPException) -> DeliveryError:
    """Map an error raised during the mail transaction: a 5xx refusal is final for this message."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        response = {"smtp_code": codes[0] if codes else None, "smtp_message": text}
        if any(code >= 500 for code in codes):
            return PermanentDeliveryError(f"recipient refused: {text}", response=response)
        return TransientDeliveryError(f"recipient deferred: {text}", response=response)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        response = {"smtp_code": exc.code, "smtp_message": exc.message}
        # A refused EHLO is about the server and our setup, not this message.
        if exc.code >= 500 and not isinstance(exc, aiosmtplib.SMTPHeloError):
            return PermanentDeliveryError(f"SMTP {exc.code} {exc.message}", response=response)
        return TransientDeliveryError(f"SMTP {exc.code} {exc.message}", response=response)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        # e.g. a non-ASCII address and a server without SMTPUTF8: this message will never go through there.
        return PermanentDeliveryError(f"SMTP server cannot take this message: {exc.message}")
    return TransientDeliveryError(f"SMTP failure: {exc.message}")


class _PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol, able to take several replies to commands written at once (RFC 2920 PIPELINING).

    aiosmtplib reads one reply per command written: it parses one reply per chunk received and drops what arrives
    while the reply it parsed waits to be picked up, so the second and third of three replies arriving together
    would be lost. While ``exchange`` waits, every complete reply received is queued in order instead, and the
    response waiter is resolved only once all of them are in; timeouts and a lost connection raise what
    ``read_response`` raises for a single command. Built on the protocol's buffer, parser and waiter
    (aiosmtplib 5.1, pinned in constraints.txt); ``_Session`` switches its connection's protocol to this class
    once connected."""

    _replies: list[SMTPResponse] | None = None
    _wanted = 0

    def data_received(self, data: bytes) -> None:
        replies, waiter = self._replies, self._response_waiter
        if replies is None or waiter is None:
            super().data_received(data)
            return
        if waiter.done():
            return  # more than the replies asked for: unsolicited, dropped as aiosmtplib does
        self._buffer.extend(data)
        try:
            while len(replies) < self._wanted:
                reply = self._read_response_from_buffer()
                if reply is None:
                    break
                replies.append(reply)
            if len(self._buffer) > MAX_RESPONSE_LENGTH:
                raise aiosmtplib.SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long")
        except Exception as exc:  # a malformed reply, as aiosmtplib reports it
            self._set_response_exception(waiter, exc)
            return
        if len(replies) >= self._wanted:
            waiter.set_result(replies[-1])

    async def exchange(self, data: bytes, replies: int, wait: float | None, received: list[SMTPResponse]) -> None:
        """Write ``data`` (``replies`` commands, or a message body) at once, then append their replies to
        ``received`` in order as they come; raises as ``read_response`` does (timeout, connection lost), with the
        replies received before that in ``received``."""
        if self._command_lock is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        async with self._command_lock:
            waiter = self._response_waiter
            if waiter is None:
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
            self._replies, self._wanted = received, len(received) + replies
            try:
                self.write(data)
                # As ``read_response`` waits, with ``asyncio.timeout`` instead of ``asyncio.wait_for`` (one future
                # and one turn of the loop less per reply, twice per message).
                async with asyncio.timeout(wait):
                    await waiter
            except TimeoutError as exc:
                raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from exc
            finally:
                self._replies, self._wanted = None, 0
                del self._buffer[:]
                self._response_waiter = None if self.transport is None else self._loop.create_future()


class _Session(aiosmtplib.SMTP):
    """An SMTP session that counts the replies to its commands, so a failed exchange tells whether the server
    answered, and keeps the code of the last one (after a refusal: the answer to the RSET that follows it)."""

    replies = 0
    last_code: int | None = None
    opened_at = 0.0
    """When it connected (time.monotonic())."""
    messages = 0
    """Mail transactions begun on it."""

    async def _create_connection(self, timeout: float | None) -> aiosmtplib.SMTPResponse:  # noqa: ASYNC109
        response = await super()._create_connection(timeout)
        if type(self.protocol) is SMTPProtocol:
            # Same state, one more method: the greeting and everything after it are read as before.
            self.protocol.__class__ = _PipeliningProtocol
        return response

    async def execute_command(self, *args: bytes, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        response = await super().execute_command(*args, **kwargs)
        self.replies += 1
        self.last_code = response.code
        return response

    async def send_plain(self, email: WireEmail) -> str:
        """``sendmail(email.sender, [email.recipient], email.data)``: the same commands (MAIL with SIZE when the
        server takes it, RCPT, DATA), errors and RSET after a refusal, for the plain ASCII addresses ``wire_email``
        checked already (nothing to quote), so without parsing each address four times. The answer to DATA.

        When the server advertises PIPELINING, MAIL, RCPT and DATA go out in one write and their three replies
        are read in order, then the body and its reply: two round trips instead of four (``_pipelined``)."""
        await self._ehlo_or_helo_if_needed()
        body = normalize_message_line_endings(email.data)
        mail = b"MAIL FROM:<" + email.sender.encode("ascii") + b">"
        if self.supports_extension("size"):
            mail += b" size=%d" % len(body)
        rcpt = b"RCPT TO:<" + email.recipient.encode("ascii") + b">"
        try:
            if self.supports_extension("pipelining") and isinstance(self.protocol, _PipeliningProtocol):
                reply = await self._pipelined(self.protocol, mail, rcpt, body, email)
            else:
                envelope = [await self.execute_command(mail)]
                refusal = _envelope_refusal(envelope, email)
                if refusal is None:
                    envelope.append(await self.execute_command(rcpt))
                    refusal = _envelope_refusal(envelope, email)
                if refusal is not None:
                    raise refusal
                reply = await self.data(body)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
                await self.rset()  # reset the envelope, as sendmail does
            raise
        return reply.message

    async def _pipelined(
        self, protocol: _PipeliningProtocol, mail: bytes, rcpt: bytes, body: bytes, email: WireEmail
    ) -> aiosmtplib.SMTPResponse:
        """MAIL, RCPT and DATA in one write, their replies checked in order (RFC 2920: all of them are read
        whatever the first said), then the body. Raises what the sequential exchange raises for the same
        replies; after a refusal the envelope is reset by the caller. A server that refuses and hangs up before
        answering the rest (421 to MAIL, then closing) raises its refusal. Should a server take DATA although it
        refused the envelope, the body is withheld: an empty message (the lone ".") ends the data phase."""
        received: list[aiosmtplib.SMTPResponse] = []
        try:
            try:
                await self._exchange(protocol, b"%s\r\n%s\r\nDATA\r\n" % (mail, rcpt), 3, received)
            except aiosmtplib.SMTPServerDisconnected as lost:
                refusal = _envelope_refusal(received, email)
                if refusal is None:
                    raise
                raise refusal from lost
            refusal = _envelope_refusal(received, email)
            if refusal is not None:
                if received[2].code == SMTPStatus.start_input:
                    await self._exchange(protocol, b".\r\n", 1, received)
                raise refusal
            await self._exchange(protocol, PERIOD_REGEX.sub(b"..", body) + b".\r\n", 1, received)
        finally:
            self.replies += len(received)
            if received:
                self.last_code = received[-1].code
        reply = received[-1]
        if reply.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return reply

    async def _exchange(
        self, protocol: _PipeliningProtocol, data: bytes, replies: int, received: list[aiosmtplib.SMTPResponse]
    ) -> None:
        """``protocol.exchange`` as ``execute_command`` runs a command: the session is closed when it is lost or
        a reply did not come in time (the replies would no longer pair with their commands), or when the server
        says it is closing (421)."""
        try:
            await protocol.exchange(data, replies, self.timeout, received)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        if any(r.code == SMTPStatus.domain_unavailable for r in received):
            self.close()


def _envelope_refusal(replies: list[SMTPResponse], email: WireEmail) -> aiosmtplib.SMTPException | None:
    """What to raise for these replies to MAIL, RCPT and DATA (as many as came), if one of them refuses the
    message: the sequential exchange and the pipelined one read them alike."""
    if replies and replies[0].code != SMTPStatus.completed:
        return aiosmtplib.SMTPSenderRefused(replies[0].code, replies[0].message, email.sender)
    if len(replies) > 1 and replies[1].code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        refused = aiosmtplib.SMTPRecipientRefused(replies[1].code, replies[1].message, email.recipient)
        return aiosmtplib.SMTPRecipientsRefused([refused])
    if len(replies) > 2 and replies[2].code != SMTPStatus.start_input:
        return aiosmtplib.SMTPDataError(replies[2].code, replies[2].message)
    return None


class _SessionGone(Exception):
    """A reused session was found dead before the server answered anything about this message."""


class SmtpEmailChannel:
    """Delivers email over SMTP, reusing authenticated sessions across deliveries.

    Connection handling is confined to ``_acquire`` and ``_release``. Up to ``smtp_pool_size`` idle sessions are
    kept and handed to one delivery at a time, most recently used first; one idle for ``smtp_idle_seconds`` or
    more is closed instead (servers drop idle sessions), and so is one that has carried
    ``smtp_session_max_messages`` messages or lived ``smtp_session_max_seconds`` (servers limit both). A session
    goes back to the pool after a completed exchange: the server took the message, or refused it and aiosmtplib
    reset the envelope on a session that is still up; on any other failure its socket is closed.
    ``smtp_pool_size=0`` means one connection per delivery.

    A reused session may have been dropped by the server without us noticing yet. If it fails (disconnected,
    connection reset) before the server answered the first command of the envelope, the server cannot have the
    message, so the delivery is made once more on a fresh connection; never after the server answered, and never
    after a fresh connection fails. Failures while connecting (refused connection, greeting, STARTTLS, AUTH) are
    transient whatever their code: they say nothing about the message, and a retry after the server or
    configuration is fixed succeeds.
    """

    def __init__(self, settings: Settings, *, name: str = "email") -> None:
        if settings.smtp_use_tls and settings.smtp_starttls:
            raise ValueError("smtp_use_tls and smtp_starttls are mutually exclusive")
        self.name = name
        self._settings = settings
        # Idle sessions and when each went idle (time.monotonic()), oldest first. Only touched between awaits,
        # so two concurrent deliveries never take the same session.
        self._idle: list[tuple[_Session, float]] = []
        self._closed = False

    def _worn(self, smtp: _Session) -> bool:
        """The session has carried ``smtp_session_max_messages`` or lived ``smtp_session_max_seconds``."""
        s = self._settings
        return (
            smtp.messages >= s.smtp_session_max_messages
            or time.monotonic() - smtp.opened_at >= s.smtp_session_max_seconds
        )

    def _take_idle(self) -> _Session | None:
        """The most recently used idle session that is still connected and fresh enough; closes stale ones."""
        now = time.monotonic()
        while self._idle:
            smtp, idle_since = self._idle.pop()
            if smtp.is_connected and now - idle_since < self._settings.smtp_idle_seconds and not self._worn(smtp):
                return smtp
            smtp.close()  # gone, or idle so long the server may drop it any moment
        return None

    async def _acquire(self, *, fresh: bool = False) -> tuple[_Session, bool]:
        """A session for one delivery, and whether it was reused; ``fresh``: never a pooled one."""
        if not fresh:
            idle = self._take_idle()
            if idle is not None:
                return idle, True
        s = self._settings
        smtp = _Session(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            use_tls=s.smtp_use_tls,
            start_tls=s.smtp_starttls,
            timeout=s.smtp_timeout_seconds,
            # Our own name in EHLO; without it every connection resolves this host's FQDN in a thread.
            local_hostname=s.email_message_id_domain,
        )
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            smtp.close()
            raise TransientDeliveryError(
                f"cannot open an SMTP session with {s.smtp_host}:{s.smtp_port}: {exc!r}"
            ) from exc
        smtp.opened_at = time.monotonic()
        return smtp, False

    async def _release(self, smtp: _Session, *, healthy: bool) -> None:
        """After a completed exchange keep the session if the pool has room, else QUIT; otherwise close the socket."""
        if (
            healthy
            and smtp.is_connected
            and not self._closed
            and len(self._idle) < self._settings.smtp_pool_size
            and not self._worn(smtp)
        ):
            self._idle.append((smtp, time.monotonic()))
            return
        try:
            if healthy:
                await smtp.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass  # the message has been answered already; a failed QUIT changes nothing
        finally:
            smtp.close()

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        email = wire_email(message, self._settings) or build_email(message, self._settings)
        smtp, reused = await self._acquire()
        try:
            return await self._send(smtp, email, reused=reused)
        except _SessionGone as gone:
            log.info("idle SMTP session was gone, sending on a fresh connection", channel=self.name, error=str(gone))
        smtp, _ = await self._acquire(fresh=True)
        return await self._send(smtp, email, reused=False)

    async def _send(self, smtp: _Session, email: EmailMessage | WireEmail, *, reused: bool) -> DeliveryResult:
        smtp.replies, smtp.last_code = 0, None
        smtp.messages += 1
        healthy = False
        try:
            if isinstance(email, WireEmail):
                reply = await smtp.send_plain(email)
            else:
                _refused, reply = await smtp.send_message(email)
            healthy = True
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
            # aiosmtplib sends RSET after a refusal; the session is clean if the server said 250 to it.
            healthy = smtp.is_connected and smtp.last_code == 250
            raise _smtp_error(exc) from exc
        except OSError as exc:
            # Includes SMTPServerDisconnected (a ConnectionError) and SMTP timeouts (TimeoutError). A timeout is not
            # a dead session (the server may just be slow), and a retry would double the wait.
            if reused and smtp.replies == 0 and not isinstance(exc, TimeoutError):
                raise _SessionGone(repr(exc)) from exc
            if isinstance(exc, aiosmtplib.SMTPException):
                raise _smtp_error(exc) from exc
            raise TransientDeliveryError(f"SMTP connection failed: {exc!r}") from exc
        except aiosmtplib.SMTPException as exc:
            raise _smtp_error(exc) from exc
        except ValueError as exc:
            # aiosmtplib checks the addresses before it opens the envelope.
            raise PermanentDeliveryError(f"invalid address: {exc}") from exc
        finally:
            await self._release(smtp, healthy=healthy)
        # aiosmtplib raises on any answer to DATA but 250, so a returned reply is a 250.
        message_id = email.message_id if isinstance(email, WireEmail) else email["Message-ID"]
        return DeliveryResult(provider_message_id=message_id, response={"smtp_code": 250, "smtp_message": reply})

    async def close(self) -> None:
        """QUIT every idle session. Sessions in use when this is called are QUIT when their delivery ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._release(smtp, healthy=True) for smtp, _ in idle))
