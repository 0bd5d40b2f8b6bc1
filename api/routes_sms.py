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
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import unicodedata
from typing import Annotated, Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Request, Response

from activities.channels.sms import DEAD_NUMBER_CODES, OPTED_OUT_CODES
from api.routes_deps import pool, settings
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


@router.post("/v1/providers/twilio/inbound")
async def twilio_inbound(request: Request, db: Pool, app_settings: AppSettings) -> Response:
    """An SMS sent to our number: STOP-family keywords withdraw SMS consent, START/UNSTOP grant it, HELP is
    answered; anything else is acknowledged with no reply."""
    form = await _signed_form(request, app_settings)
    phone = _required(form, "From")
    word = keyword(form.get("Body", ""))
    if word in STOP_KEYWORDS:
        changed = await sms_store.set_sms_consent(db, phone, "withdrawn", source="sms_keyword")
        log.info("sms.keyword", keyword="stop", customers=len(changed))
        return _twiml()  # the carrier or Twilio confirms the opt-out; nothing more may be sent
    if word in START_KEYWORDS:
        changed = await sms_store.set_sms_consent(db, phone, "granted", source="sms_keyword")
        log.info("sms.keyword", keyword="start", customers=len(changed))
        return _twiml()
    if word in HELP_KEYWORDS:
        return _twiml(app_settings.sms_help_text)
    return _twiml()
