"""Consent history, provider bounce/complaint webhooks, and data rights (export, erase).

Provider webhooks (``POST /v1/providers/{provider}/events``) take the API key like every route, or as the
password of HTTP Basic authentication (any user name): Amazon SNS and Postmark can call a URL with
``https://parcours:<key>@host/...`` but cannot add a header of their choice.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Query, Request, Response
from temporalio.client import Client

from api.routes_deps import (
    ADMIN,
    READ,
    ResolvedCustomer,
    check_role,
    pool,
    presented_key,
    read_json,
    settings,
    temporal,
)
from api.schemas import ApiError, email_address, phone_number
from config.settings import Settings
from journeys.values import InputError, loads_json
from orchestration import exits
from store import customers as customer_store
from store import engagement, privacy
from store import entries as entries_store
from store import identity as identity_store
from store import suppressions as suppression_store

log = structlog.get_logger(__name__)

Pool = Annotated[asyncpg.Pool, Depends(pool)]
Temporal = Annotated[Client, Depends(temporal)]
AppSettings = Annotated[Settings, Depends(settings)]

ERASED_REASON = "erased"
# How long an erasure waits for the customer's running journeys to close after the exit signal. Runs still open
# then: the data is erased anyway, the answer is 202 and the erasure stays incomplete until called again.
ERASE_WAIT_SECONDS = 20.0
# Passes over visibility (eventually consistent) looking for running runs not yet asked to exit.
ERASE_PASSES = 3
PROVIDERS = ("generic", "ses", "postmark")


async def require_provider_key(request: Request) -> None:
    """A ``write`` API key in the usual headers, or as the password of ``Authorization: Basic``."""
    auth = request.headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "basic":
        check_role(request, presented_key(request), "write")
        return
    try:
        _user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "malformed Basic credentials", field="authorization") from None
    if not password:
        raise ApiError(401, "invalid API key", field="authorization")
    check_role(request, password, "write")


require_provider_key.required_role = "write"  # type: ignore[attr-defined]


customers = APIRouter(tags=["privacy"])
providers = APIRouter(tags=["privacy"], dependencies=[Depends(require_provider_key)])


# --- consent history -----------------------------------------------------------------------------------------


@customers.get("/v1/customers/{customer_id}/consent/history", dependencies=[READ])
async def consent_history(
    customer_id: ResolvedCustomer,
    db: Pool,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="``next_before`` of the previous page")] = None,
) -> dict[str, Any]:
    """Every consent change, newest first: scope, name, status, source, lawful basis, time. Never overwritten."""
    if await customer_store.get_customer(db, customer_id) is None:
        raise ApiError(404, f"unknown customer '{customer_id}'", field="customer_id")
    items = await privacy.consent_history(db, customer_id, limit=limit, before=before)
    return {"items": items, "next_before": items[-1]["id"] if len(items) == limit else None}


# --- export and erase ----------------------------------------------------------------------------------------


@customers.get("/v1/customers/{customer_id}/export", dependencies=[ADMIN])
async def export_customer(customer_id: ResolvedCustomer, db: Pool) -> dict[str, Any]:
    """Everything stored about the customer as one JSON document (right of access / portability)."""
    document = await privacy.export_customer(db, customer_id)
    if document is None:
        raise ApiError(404, f"unknown customer '{customer_id}'", field="customer_id")
    return {"customer_id": customer_id, "exported_at": datetime.now(UTC), **document}


def pseudonym_secret(app_settings: Settings) -> bytes:
    # No setting of its own yet: the pseudonym key is derived from link_secret (store.privacy.PSEUDONYM_LABEL
    # separates the uses). Rotating link_secret changes the pseudonyms of later erasures.
    return app_settings.link_secret.get_secret_value().encode()


@customers.delete("/v1/customers/{customer_id}", dependencies=[ADMIN])
async def erase_customer(
    customer_id: ResolvedCustomer, db: Pool, client: Temporal, app_settings: AppSettings, response: Response
) -> dict[str, Any]:
    """Erase the customer's personal data; keep anonymous aggregates under a pseudonym; end running journeys
    (exit reason ``erased``; a run that refuses to exit or has not closed in time is terminated, and logged under the
    pseudonym in the operators' log); delete the customer's closed run histories; record the erasure. Safe to repeat.
    ``202``: runs were still being found when the time ran out, the data is erased but call again to finish."""
    requested_at = datetime.now(UTC)
    # Profiles merged into the customer are the same person: their runs and histories go too.
    people = [customer_id, *await identity_store.merged_profiles(db, customer_id)]
    reports = [
        await exits.exit_customer(
            client, person, ERASED_REASON, wait_seconds=ERASE_WAIT_SECONDS, max_passes=ERASE_PASSES
        )
        for person in people
    ]
    # The segment runs whose histories list the customer among the members they entered, named by the entry ids:
    # read before the erasure scrubs them, and under the pseudonym too (a repeated erasure finds the runs that
    # were still going the first time).
    secret = pseudonym_secret(app_settings)
    segment_runs = [
        wid
        for person in people
        for owner in (person, privacy.pseudonym(secret, person))
        for journey_id, entry_id in await entries_store.segment_entries(db, owner)
        if (wid := exits.segment_workflow_id(journey_id, entry_id, owner)) is not None
    ]
    # A segment run still entering customers keeps the id in its history until it ends: the erasure is not
    # complete (202) until a later call deletes that history.
    still_entering = await exits.running_segment_runs(client, segment_runs)
    exited = sum(len(report.exited) for report in reports)
    terminated = sum(len(report.terminated) for report in reports)
    runs_closed = all(report.complete for report in reports)
    complete = runs_closed and not still_entering
    erasure = await privacy.erase_customer(db, customer_id, secret, requested_at=requested_at, complete=complete)
    for report in reports:
        await exits.record_terminations(
            db, report, actor="erasure", reason=ERASED_REASON, target=f"erased:{erasure['pseudonym']}"
        )
    deleted = 0
    if runs_closed:
        for person, report in zip(people, reports, strict=True):
            deleted += await exits.delete_closed_histories(client, person, report.closed())
    deleted += await exits.delete_segment_histories(client, segment_runs)
    log.info(
        "customer.erased",
        pseudonym=erasure["pseudonym"],
        complete=complete,
        exited=exited,
        terminated=terminated,
        segment_runs_running=len(still_entering),
    )
    if not complete:
        response.status_code = 202
    return {
        **erasure,
        "complete": complete,
        "runs": {
            "exited": exited,
            "terminated": terminated,
            "still_running": 0,  # every run found was exited or terminated (kept for older clients)
            "histories_deleted": deleted,
            "segment_runs_running": len(still_entering),
        },
    }


# --- provider webhooks: bounces and complaints ---------------------------------------------------------------

Report = tuple[str, str, str, dict[str, Any]]
"""(channel, address, reason ``hard_bounce``/``complaint``, detail)"""


@providers.post("/v1/providers/{provider}/events")
async def provider_events(provider: str, request: Request, db: Pool) -> dict[str, Any]:
    """Bounces and complaints from a provider. Hard bounces and spam complaints suppress the address and withdraw
    the channel consent of the customers with that address (ledger source ``bounce``/``complaint``); soft bounces
    and other notifications are acknowledged and ignored. Formats: ``generic``, ``ses`` (Amazon SES through SNS, or
    raw), ``postmark``."""
    if provider not in PROVIDERS:
        raise ApiError(404, f"unknown provider '{provider}': use one of {', '.join(PROVIDERS)}", field="provider")
    body = await read_json(request)
    if provider == "ses" and isinstance(body, dict) and body.get("Type") == "SubscriptionConfirmation":
        # Confirming means fetching a URL the sender chose: left to the operator (logged, and answered here).
        log.warning("providers.sns_subscription", topic=body.get("TopicArn"), subscribe_url=body.get("SubscribeURL"))
        return {"status": "subscription_confirmation", "subscribe_url": body.get("SubscribeURL"), "results": []}
    reports = {"generic": _generic, "ses": _ses, "postmark": _postmark}[provider](body)
    results = []
    for item in reports:
        if item is None:
            results.append({"status": "ignored"})
            continue
        channel, address, reason, detail = item
        # Which message it was about is counted on the message, not kept with the suppression (which outlives an
        # erasure, and a message key names the customer).
        message = {name: detail.pop(name, None) for name in ("message_key", "message_id")}
        outcome = await suppression_store.suppress(
            db,
            channel,  # type: ignore[arg-type]  # the parsers only produce email or sms
            address,
            reason,  # type: ignore[arg-type]  # ... and hard_bounce or complaint
            source=provider,
            detail=detail,  # type: ignore[arg-type]
        )
        await engagement.record_report(db, reason, **message)  # type: ignore[arg-type]
        results.append({"status": "suppressed", "reason": reason, "channel": channel, **asdict(outcome)})
    return {"status": "ok", "results": results}


def _field(data: Any, path: str, name: str) -> Any:
    if not isinstance(data, dict) or name not in data:
        raise ApiError(422, f"{path}{name}: field required", field=f"{path}{name}")
    return data[name]


def _string(data: Any, path: str, name: str, *, max_length: int = 320) -> str:
    value = _field(data, path, name)
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        message = f"{path}{name}: must be a non-empty string of at most {max_length} characters"
        raise ApiError(422, message, field=f"{path}{name}")
    return value.strip()


def _email(value: str, field: str) -> str:
    try:
        return email_address(value)
    except ValueError as exc:
        raise ApiError(422, f"{field}: {exc}", field=field) from None


_GENERIC_TYPES = {"hard_bounce": "hard_bounce", "complaint": "complaint", "soft_bounce": None}


def _generic(body: Any) -> list[Report | None]:
    """``{"type": "hard_bounce"|"complaint"|"soft_bounce", "channel": "email"|"sms", "address": ...}``, or
    ``{"events": [...]}`` of those."""
    if isinstance(body, dict) and "events" in body:
        items, prefix = body["events"], "events"
        if not isinstance(items, list) or not items or len(items) > 500:
            raise ApiError(422, "events: must be a list of 1 to 500 objects", field="events")
    else:
        items, prefix = [body], None
    out: list[Report | None] = []
    for index, item in enumerate(items):
        path = f"{prefix}[{index}]." if prefix else ""
        if not isinstance(item, dict):
            raise ApiError(422, f"{path or 'body'}: must be a JSON object", field=path.rstrip(".") or "body")
        kind = _string(item, path, "type")
        if kind not in _GENERIC_TYPES:
            raise ApiError(
                422,
                f"{path}type: unknown type '{kind[:50]}': use hard_bounce, complaint or soft_bounce",
                field=f"{path}type",
            )
        channel = item.get("channel", "email")
        if channel not in ("email", "sms"):
            raise ApiError(422, f"{path}channel: use email or sms", field=f"{path}channel")
        address = _string(item, path, "address")
        if channel == "email":
            address = _email(address, f"{path}address")
        else:
            try:
                address = phone_number(address)
            except ValueError as exc:
                raise ApiError(422, f"{path}address: {exc}", field=f"{path}address") from None
        reason = _GENERIC_TYPES[kind]
        detail: dict[str, Any] = {"type": kind}
        for name in ("message_key", "message_id"):  # optional: the message that bounced or was complained about
            if name in item:
                detail[name] = _string(item, path, name, max_length=1000)
        out.append(None if reason is None else (channel, address, reason, detail))
    return out


def _ses(body: Any) -> list[Report | None]:
    """Amazon SES bounce/complaint notifications: an SNS envelope (``Type: Notification``, ``Message`` a JSON
    string), or the SES message itself (raw delivery). Permanent bounces and complaints count."""
    if not isinstance(body, dict):
        raise ApiError(422, "body: must be a JSON object", field="body")
    message, path = body, ""
    if "Type" in body:
        if body["Type"] != "Notification":
            return [None]
        raw = _string(body, "", "Message", max_length=1_000_000)
        try:
            message = loads_json(raw)  # checked like the body: NaN, NUL, lone surrogates, depth...
        except InputError as exc:
            field = "Message" if exc.field == "body" else f"Message.{exc.field}"
            raise ApiError(422, f"{field}: not a JSON document we can take: {exc.message}", field=field) from None
        path = "Message."
        if not isinstance(message, dict):
            raise ApiError(422, "Message: must be a JSON object", field="Message")
    key = "notificationType" if "notificationType" in message else "eventType"
    kind = _string(message, path, key)
    mail: dict[str, Any] = message["mail"] if isinstance(message.get("mail"), dict) else {}
    mail_id = mail.get("messageId")
    ours = _ses_message(mail)
    if kind == "Bounce":
        bounce = _field(message, path, "bounce")
        bounce_type = _string(bounce, f"{path}bounce.", "bounceType")
        recipients = _recipients(bounce, f"{path}bounce.", "bouncedRecipients")
        if bounce_type != "Permanent":
            return [None for _ in recipients]
        detail = {"bounceType": bounce_type, "bounceSubType": bounce.get("bounceSubType"), "messageId": mail_id, **ours}
        return [("email", address, "hard_bounce", detail) for address in recipients]
    if kind == "Complaint":
        complaint = _field(message, path, "complaint")
        recipients = _recipients(complaint, f"{path}complaint.", "complainedRecipients")
        detail = {"feedbackType": complaint.get("complaintFeedbackType"), "messageId": mail_id, **ours}
        return [("email", address, "complaint", detail) for address in recipients]
    return [None]  # Delivery, Send, Open...: nothing to do


def _ses_message(mail: dict[str, Any]) -> dict[str, str]:
    """The message an SES notification is about, as we named it: the ``X-Parcours-Idempotency-Key`` header (SES
    includes the original headers when the notification is set up to) and the ``Message-ID`` we sent."""
    out: dict[str, str] = {}
    headers = mail.get("headers")
    for header in headers if isinstance(headers, list) else []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "x-parcours-idempotency-key":
            if isinstance(header.get("value"), str):
                out["message_key"] = header["value"].strip()[:1000]  # a long header arrives folded
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and isinstance(common.get("messageId"), str):
        out["message_id"] = common["messageId"][:1000]
    return out


def _recipients(data: Any, path: str, name: str) -> list[str]:
    items = _field(data, path, name)
    if not isinstance(items, list) or not items:
        raise ApiError(422, f"{path}{name}: must be a non-empty list", field=f"{path}{name}")
    return [
        _email(_string(item, f"{path}{name}[{i}].", "emailAddress"), f"{path}{name}[{i}].emailAddress")
        for i, item in enumerate(items)
    ]


# Postmark bounce types that mean the address is dead (https://postmarkapp.com/developer/api/bounce-api).
_POSTMARK_HARD = ("HardBounce", "BadEmailAddress")
_POSTMARK_COMPLAINT = ("SpamComplaint",)


def _postmark(body: Any) -> list[Report | None]:
    """Postmark bounce and spam complaint webhooks (``RecordType`` ``Bounce``/``SpamComplaint``)."""
    if not isinstance(body, dict):
        raise ApiError(422, "body: must be a JSON object", field="body")
    record_type = _string(body, "", "RecordType")
    if record_type not in ("Bounce", "SpamComplaint"):
        return [None]
    kind = _string(body, "", "Type")
    address = _email(_string(body, "", "Email"), "Email")
    detail = {"Type": kind, "TypeCode": body.get("TypeCode"), "MessageID": body.get("MessageID")}
    if record_type == "SpamComplaint" or kind in _POSTMARK_COMPLAINT:
        return [("email", address, "complaint", detail)]
    if kind in _POSTMARK_HARD:
        return [("email", address, "hard_bounce", detail)]
    return [None]


router = APIRouter()
router.include_router(customers)
router.include_router(providers)
