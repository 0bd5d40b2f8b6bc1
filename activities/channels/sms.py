"""SMS over Twilio's Messages API, or over any HTTP provider (a JSON body template).

Both measure the text first (``journeys.sms``: GSM-7 or UCS-2, segments), refuse a text over
``sms_max_segments`` segments, and record the encoding, the segments and the cost (the channel's per-segment cost
from ``channel_costs`` times the segments) with the message.

Twilio: a form-encoded ``POST {twilio_base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP Basic
(account SID, auth token), ``To``, ``From`` or ``MessagingServiceSid``, ``Body`` and ``StatusCallback``. Twilio's
answer is ``201`` with the message resource (``sid``, ``status``), or an error document ``{"code", "message",
"more_info", "status"}``. Twilio's Messages API takes no idempotency key, so none is sent; the generic adapter
sends the message's key as ``Idempotency-Key`` and offers it to its body template.

Error codes (Twilio's error dictionary) and what they do, at send time and in status callbacks
(``api/routes_sms.py``):

- ``21610`` "Attempt to send to unsubscribed recipient": the number texted STOP to the sender. SMS consent is
  withdrawn (ledger source ``sms_keyword``): the customer said so, through the carrier.
- ``21211`` invalid ``To`` number, ``21614`` not a mobile number, ``30005`` unknown destination handset (the
  number does not exist), ``30006`` landline or unreachable carrier: the number will never take an SMS, so it is
  suppressed (reason ``hard_bounce``, source ``twilio``), which also withdraws the SMS consent of the customers
  with that number.
- ``30003`` unreachable destination handset is *not* acted on: Twilio documents it for a phone that is switched
  off or out of coverage as well, which passes. The message is recorded failed, nothing more.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from activities.channels.base import (
    DeliveryResult,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from activities.channels.webhook import response_body
from config.settings import Settings
from journeys.sms import SmsLength, measure
from journeys.templates import TemplateError, render_value

# Twilio error codes: the recipient opted out (consent withdrawn), the number can never take an SMS (suppressed).
OPTED_OUT_CODES = frozenset({21610})
DEAD_NUMBER_CODES = frozenset({21211, 21614, 30005, 30006})
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
STATUS_CALLBACK_PATH = "/v1/providers/twilio/status"


def measured(message: OutboundMessage, settings: Settings) -> tuple[str, SmsLength]:
    """The text and its length; PermanentDeliveryError when there is none, or it is over the segment limit."""
    if not message.recipient:
        raise PermanentDeliveryError("customer has no phone number")
    text = message.content.get("text")
    if not isinstance(text, str) or not text.strip():
        raise PermanentDeliveryError("sms has no text")
    length = measure(text)
    if length.segments > settings.sms_max_segments:
        raise PermanentDeliveryError(
            f"sms text takes {length.segments} segments ({length.units} {length.encoding} units), over the limit "
            f"of {settings.sms_max_segments}",
            response={"segments": length.segments, "encoding": length.encoding},
        )
    return text, length


def _result(provider_id: str | None, response: dict[str, Any], length: SmsLength, settings: Settings) -> DeliveryResult:
    per_segment = settings.channel_costs.get("sms")
    return DeliveryResult(
        provider_message_id=provider_id,
        response=response,
        segments=length.segments,
        encoding=length.encoding,
        cost=None if per_segment is None else round(per_segment * length.segments, 6),
    )


def status_callback_url(settings: Settings) -> str:
    return settings.twilio_status_callback_url or settings.public_base_url.rstrip("/") + STATUS_CALLBACK_PATH


class TwilioSmsChannel:
    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None, *, name: str = "sms") -> None:
        if not settings.twilio_account_sid or settings.twilio_auth_token is None:
            raise ValueError("the twilio SMS adapter needs PARCOURS_TWILIO_ACCOUNT_SID and PARCOURS_TWILIO_AUTH_TOKEN")
        if not settings.twilio_from and not settings.twilio_messaging_service_sid:
            raise ValueError(
                "the twilio SMS adapter needs a sender: PARCOURS_TWILIO_FROM or PARCOURS_TWILIO_MESSAGING_SERVICE_SID"
            )
        self.name = name
        self._settings = settings
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=settings.sms_timeout_seconds)

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        s = self._settings
        text, length = measured(message, s)
        assert s.twilio_account_sid and s.twilio_auth_token is not None  # checked in __init__
        form = {"To": message.recipient or "", "Body": text, "StatusCallback": status_callback_url(s)}
        if s.twilio_messaging_service_sid:
            form["MessagingServiceSid"] = s.twilio_messaging_service_sid
        else:
            form["From"] = s.twilio_from or ""
        url = f"{s.twilio_base_url.rstrip('/')}/2010-04-01/Accounts/{s.twilio_account_sid}/Messages.json"
        try:
            response = await self._client.post(
                url, data=form, auth=(s.twilio_account_sid, s.twilio_auth_token.get_secret_value())
            )
        except httpx.TransportError as exc:
            raise TransientDeliveryError(f"twilio unreachable: {exc!r}") from exc
        body = response_body(response)
        answer: dict[str, Any] = body if isinstance(body, dict) else {"body": body}
        if response.is_success and isinstance(answer.get("sid"), str):
            return _result(
                answer["sid"], {"status": answer.get("status"), "http_status": response.status_code}, length, s
            )
        code = answer.get("code")
        detail = {"http_status": response.status_code, "twilio_code": code, "message": answer.get("message")}
        status = response.status_code
        if status in RETRYABLE_STATUSES or status >= 500 or status in (401, 403):
            # Rate limits, outages and our own credentials are not about this message: retried.
            raise TransientDeliveryError(f"twilio answered {status} (code {code})", response=detail)
        raise PermanentDeliveryError(f"twilio refused the sms: {code} {answer.get('message')}", response=detail)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


class HttpSmsChannel:
    """Any HTTP SMS provider: ``sms_http_body`` rendered (Liquid) with ``to``, ``from``, ``text`` and
    ``idempotency_key`` and POSTed as JSON to ``sms_http_url`` with ``sms_http_headers`` and ``Idempotency-Key``.
    A 2xx is sent (the provider's id from its ``id``, ``message_id`` or ``sid`` field if any); 429/5xx are
    retried; any other answer is a permanent refusal."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None, *, name: str = "sms") -> None:
        if not settings.sms_http_url:
            raise ValueError("the http SMS adapter needs PARCOURS_SMS_HTTP_URL")
        self.name = name
        self._settings = settings
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=settings.sms_timeout_seconds)

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        s = self._settings
        text, length = measured(message, s)
        context = {
            "to": message.recipient,
            "from": s.sms_http_from or "",
            "text": text,
            "idempotency_key": message.idempotency_key,
        }
        try:
            body = render_value(s.sms_http_body, context)
            content = json.dumps(body)
        except (TemplateError, TypeError, ValueError) as exc:
            raise PermanentDeliveryError(f"sms_http_body cannot be rendered: {exc}") from exc
        headers = {
            **s.sms_http_headers,
            "content-type": "application/json",
            "idempotency-key": message.idempotency_key,
        }
        assert s.sms_http_url
        try:
            response = await self._client.post(s.sms_http_url, content=content.encode(), headers=headers)
        except httpx.TransportError as exc:
            raise TransientDeliveryError(f"sms provider unreachable: {exc!r}") from exc
        answer = response_body(response)
        detail = {"http_status": response.status_code, "body": answer}
        if response.is_success:
            provider_id = None
            if isinstance(answer, dict):
                provider_id = next((str(answer[k]) for k in ("id", "message_id", "sid") if answer.get(k)), None)
            return _result(provider_id or message.idempotency_key, detail, length, s)
        if response.status_code in RETRYABLE_STATUSES or response.status_code >= 500:
            raise TransientDeliveryError(f"sms provider answered {response.status_code}", response=detail)
        raise PermanentDeliveryError(f"sms provider answered {response.status_code}", response=detail)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
