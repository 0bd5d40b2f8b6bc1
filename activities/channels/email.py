"""Email over SMTP.

The Message-ID is derived from the idempotency key, so a delivery retried after a lost reply carries the same
id and the receiving side (or a later audit) can recognise the duplicate.
"""

from __future__ import annotations

import hashlib
import re
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from activities.channels.base import (
    DeliveryError,
    DeliveryResult,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from config.settings import Settings

_LINE_BREAKS = re.compile(r"[\r\n]+\s*")


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
        email = EmailMessage()
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


class SmtpEmailChannel:
    """Delivers email over SMTP, one connection per delivery.

    Connection handling is confined to ``_acquire`` and ``_release`` so a pool can replace it later.
    Failures while connecting (refused connection, greeting, STARTTLS, AUTH) are transient whatever their
    code: they say nothing about the message, and a retry after the server or configuration is fixed succeeds.
    """

    def __init__(self, settings: Settings, *, name: str = "email") -> None:
        if settings.smtp_use_tls and settings.smtp_starttls:
            raise ValueError("smtp_use_tls and smtp_starttls are mutually exclusive")
        self.name = name
        self._settings = settings

    async def _acquire(self) -> aiosmtplib.SMTP:
        s = self._settings
        smtp = aiosmtplib.SMTP(
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
        return smtp

    async def _release(self, smtp: aiosmtplib.SMTP, *, healthy: bool) -> None:
        """End the session: politely after a completed exchange, by closing the socket otherwise."""
        try:
            if healthy:
                await smtp.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass  # the message has been answered already; a failed QUIT changes nothing
        finally:
            smtp.close()

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        email = build_email(message, self._settings)
        smtp = await self._acquire()
        healthy = False
        try:
            _refused, reply = await smtp.send_message(email)
            healthy = True
        except aiosmtplib.SMTPResponseException as exc:
            healthy = smtp.is_connected  # aiosmtplib has reset the envelope after a refusal
            raise _smtp_error(exc) from exc
        except aiosmtplib.SMTPException as exc:
            raise _smtp_error(exc) from exc
        except ValueError as exc:
            # aiosmtplib checks the addresses before it opens the envelope.
            raise PermanentDeliveryError(f"invalid address: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise TransientDeliveryError(f"SMTP connection failed: {exc!r}") from exc
        finally:
            await self._release(smtp, healthy=healthy)
        # aiosmtplib raises on any answer to DATA but 250, so a returned reply is a 250.
        return DeliveryResult(
            provider_message_id=email["Message-ID"], response={"smtp_code": 250, "smtp_message": reply}
        )

    async def close(self) -> None:
        """Nothing to release: connections live for one delivery."""
