"""Twilio's callbacks: message status (delivery receipts) and inbound messages (STOP, START, HELP).

Twilio signs every request it makes: ``X-Twilio-Signature`` is the base64 HMAC-SHA1, keyed with the account's
auth token, of the full URL Twilio called followed by each POST parameter's name and value, sorted by name. The
URL is rebuilt from ``public_base_url`` (what Twilio was given, whatever proxy is in between) and the request's
path and query. A missing or wrong signature is refused with ``403``; with no auth token configured the routes do
not exist for the caller: ``404`` (nothing a caller sends can make this a server error).

Inbound keywords (the whole message, case and surrounding punctuation ignored): ``STOP``, ``STOPALL``,
``UNSUBSCRIBE``, ``CANCEL``, ``END``, ``QUIT``, ``ARRET``, ``ARRÊT`` and ``STOP SMS`` withdraw SMS consent of
every customer with that number (ledger source ``sms_keyword``); ``START``, ``UNSTOP`` and ``YES`` grant it
again; ``HELP`` and ``INFO`` are answered with ``sms_help_text``. The answer is TwiML.

The generic HTTP provider (``PARCOURS_CHANNEL_SMS=http``) forwards inbound messages to
``POST /v1/providers/sms/inbound`` as JSON ``{"from": "+33612345678", "text": "STOP", "to": ..., "id": ...}`` (``to``
and ``id`` optional), signed: ``X-Parcours-Timestamp`` is the time of sending in Unix seconds and
``X-Parcours-Signature`` is ``v1=`` and the hex HMAC-SHA256, keyed with ``sms_http_inbound_secret``, of the
timestamp, a dot and the raw body (the timestamp is signed with the body, so it cannot be replaced). A timestamp
more than ``INBOUND_TOLERANCE_SECONDS`` away from our clock is refused like a bad signature (``403``), and a request
seen before within that time is answered ``duplicate`` without acting again (``store.sms``: by signature). No
secret configured: ``404``. The same keywords act (``inbound_keyword``, shared with Twilio's route); HELP is
answered by an SMS sent through the HTTP provider (``activities.channels.sms.HttpSmsChannel``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from activities.channels.base import DeliveryError, OutboundMessage
from activities.channels.sms import DEAD_NUMBER_CODES, OPTED_OUT_CODES, HttpSmsChannel
from api.routes_deps import pool, read_model, settings
from api.schemas import ApiError
from config.settings import Settings
from store import messages as message_store
from store import sms as sms_store
from store import suppressions as suppression_store

log = structlog.get_logger(__name__)

router = APIRouter(tags=["sms"])
Pool = Annotated[asyncpg.Pool, Depends(pool)]
AppSettings = Annotated[Settings, Depends(settings)]

STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "ARRET", "STOP SMS"})
START_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
RECEIPT_WAIT_SECONDS = 3.0
"""Twilio may call back before the send that got the SID has committed it (it answers the POST first): a signed
callback for a SID not recorded yet is looked up again for this long before it is answered ``unknown_message``."""
MESSAGE_STATUSES = frozenset(
    {"accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "failed", "read", "canceled"}
)


def twilio_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's request signature: base64(HMAC-SHA1(auth token, URL + sorted name/value pairs))."""
    data = url + "".join(name + value for name, value in sorted(params, key=lambda p: p[0]))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def keyword(body: str) -> str:
    """The message as a keyword: upper case, accents and punctuation around it dropped, spaces squeezed."""
    text = unicodedata.normalize("NFKD", body).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^A-Za-z0-9 ]", " ", text).upper().split())


async def _signed_form(request: Request, app_settings: Settings) -> dict[str, str]:
    token = app_settings.twilio_auth_token
    if token is None:
        raise ApiError(
            404, "Twilio callbacks are not configured here (PARCOURS_TWILIO_AUTH_TOKEN is not set)", field=None
        )
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise ApiError(415, "send application/x-www-form-urlencoded, as Twilio does", field="content-type")
    try:
        params = parse_qsl((await request.body()).decode(), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "the body is not a form", field="body") from None
    url = app_settings.public_base_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    given = request.headers.get("x-twilio-signature", "")
    expected = twilio_signature(token.get_secret_value(), url, params)
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(403, "invalid X-Twilio-Signature", field="x-twilio-signature")
    return dict(params)


def _twiml(message: str | None = None) -> Response:
    inner = f"<Message>{escape(message)}</Message>" if message else ""
    return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>', media_type="application/xml")


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value or len(value) > 1000:
        raise ApiError(422, f"{name}: field required (at most 1000 characters)", field=name)
    return value


@router.post("/v1/providers/twilio/status")
async def twilio_status(request: Request, db: Pool, app_settings: AppSettings) -> dict[str, Any]:
    """A message status callback: records the status (``delivered_at`` / ``failed_at``) and acts on the error
    codes ``activities.channels.sms`` lists (opt-out withdraws SMS consent, a dead number is suppressed)."""
    form = await _signed_form(request, app_settings)
    sid = _required(form, "MessageSid")
    status = _required(form, "MessageStatus").lower()
    if status not in MESSAGE_STATUSES:
        raise ApiError(422, f"MessageStatus: unknown status '{status[:40]}'", field="MessageStatus")
    code_text = form.get("ErrorCode", "").strip()
    code = int(code_text) if code_text.isdigit() else None
    receipt = await message_store.record_receipt(db, sid, status, error=code_text or None)
    deadline = asyncio.get_running_loop().time() + RECEIPT_WAIT_SECONDS
    while receipt is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        receipt = await message_store.record_receipt(db, sid, status, error=code_text or None)
    if receipt is None:
        return {"status": "unknown_message"}
    phone = form.get("To") or receipt.recipient
    action = None
    if code in OPTED_OUT_CODES and phone:
        await sms_store.set_sms_consent(db, phone, "withdrawn", source="sms_keyword")
        action = "consent_withdrawn"
    elif code in DEAD_NUMBER_CODES and phone:
        await suppression_store.suppress(db, "sms", phone, "hard_bounce", source="twilio", detail={"twilio_code": code})
        action = "suppressed"
    log.info("sms.receipt", message_sid=sid, status=status, error_code=code, action=action)
    return {"status": "ok", "message_status": receipt.status, "action": action}


@dataclass(frozen=True)
class Inbound:
    """What an inbound message's keyword did: ``stop``, ``start``, ``help`` or None, and the reply to send."""

    keyword: str | None
    reply: str | None = None
    customers: int = 0


async def inbound_keyword(db: asyncpg.Pool, app_settings: Settings, phone: str, body: str) -> Inbound:
    """Act on an inbound SMS from ``phone``, whichever provider brought it: STOP-family keywords withdraw SMS
    consent of every customer with that number, START/UNSTOP/YES grant it again, HELP/INFO get ``sms_help_text``
    as the reply; anything else does nothing."""
    word = keyword(body)
    if word in STOP_KEYWORDS:
        changed = await sms_store.set_sms_consent(db, phone, "withdrawn", source="sms_keyword")
        log.info("sms.keyword", keyword="stop", customers=len(changed))
        return Inbound("stop", customers=len(changed))  # the carrier or provider confirms; nothing more is sent
    if word in START_KEYWORDS:
        changed = await sms_store.set_sms_consent(db, phone, "granted", source="sms_keyword")
        log.info("sms.keyword", keyword="start", customers=len(changed))
        return Inbound("start", customers=len(changed))
    if word in HELP_KEYWORDS:
        return Inbound("help", reply=app_settings.sms_help_text)
    return Inbound(None)


@router.post("/v1/providers/twilio/inbound")
async def twilio_inbound(request: Request, db: Pool, app_settings: AppSettings) -> Response:
    """An SMS sent to our number: STOP-family keywords withdraw SMS consent, START/UNSTOP grant it, HELP is
    answered; anything else is acknowledged with no reply."""
    form = await _signed_form(request, app_settings)
    phone = _required(form, "From")
    return _twiml((await inbound_keyword(db, app_settings, phone, form.get("Body", ""))).reply)


INBOUND_TOLERANCE_SECONDS = 300
"""How far an inbound request's ``X-Parcours-Timestamp`` may be from our clock, either way."""
SIGNATURE_HEADER = "x-parcours-signature"
TIMESTAMP_HEADER = "x-parcours-timestamp"


def inbound_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=`` and the hex HMAC-SHA256 of ``{timestamp}.{body}``, keyed with the secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


class InboundSms(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sender: str = Field(alias="from", min_length=1, max_length=64)
    text: str = Field(default="", max_length=2000)
    to: str | None = Field(default=None, max_length=64)
    id: str | None = Field(default=None, max_length=200)


async def _signed_body(request: Request, app_settings: Settings) -> str:
    """Check the generic provider's signature and timestamp; the signature (what replays are recognised by)."""
    secret = app_settings.sms_http_inbound_secret
    if secret is None:
        raise ApiError(
            404, "inbound SMS is not configured here (PARCOURS_SMS_HTTP_INBOUND_SECRET is not set)", field=None
        )
    timestamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
    given = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise ApiError(403, "X-Parcours-Timestamp: Unix seconds required", field="x-parcours-timestamp")
    if abs(time.time() - int(timestamp)) > INBOUND_TOLERANCE_SECONDS:
        raise ApiError(
            403,
            f"X-Parcours-Timestamp is more than {INBOUND_TOLERANCE_SECONDS} s from our clock",
            field="x-parcours-timestamp",
        )
    expected = inbound_signature(secret.get_secret_value(), timestamp, await request.body())
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(403, "invalid X-Parcours-Signature", field="x-parcours-signature")
    return expected


@router.post("/v1/providers/sms/inbound")
async def http_sms_inbound(request: Request, db: Pool, app_settings: AppSettings) -> dict[str, Any]:
    """An SMS sent to our number through the generic HTTP provider, signed with ``sms_http_inbound_secret``:
    the same keywords as Twilio's inbound route; HELP is answered by SMS through the HTTP provider."""
    signature = await _signed_body(request, app_settings)
    message = await read_model(request, InboundSms)
    phone = message.sender.strip()
    if not phone:
        raise ApiError(422, "from: the sender's number is required", field="from")
    if not await sms_store.first_seen(db, signature, INBOUND_TOLERANCE_SECONDS):
        return {"status": "duplicate"}
    inbound = await inbound_keyword(db, app_settings, phone, message.text)
    replied = False
    if inbound.reply is not None:
        replied = await _reply(app_settings, phone, inbound.reply, message.id or signature)
    return {"status": "ok", "keyword": inbound.keyword, "customers": inbound.customers, "replied": replied}


async def _reply(app_settings: Settings, phone: str, text: str, inbound_id: str) -> bool:
    """Send ``text`` to ``phone`` through the HTTP SMS provider; whether it took it (a failure is logged, never
    answered with an error: the inbound message itself was handled)."""
    if not app_settings.sms_http_url:
        log.warning("sms.reply_not_sent", reason="PARCOURS_SMS_HTTP_URL is not set")
        return False
    key = "sms-reply:" + hashlib.sha256(inbound_id.encode()).hexdigest()[:32]
    channel = HttpSmsChannel(app_settings)
    try:
        await channel.deliver(
            OutboundMessage(
                idempotency_key=key,
                customer_id="",
                channel="sms",
                recipient=phone,
                kind="transactional",
                journey_id="",
                step_id="sms-help",
                content={"text": text},
            )
        )
    except DeliveryError as exc:
        log.warning("sms.reply_failed", error=str(exc))
        return False
    finally:
        await channel.close()
    log.info("sms.reply_sent", keyword="help")
    return True
