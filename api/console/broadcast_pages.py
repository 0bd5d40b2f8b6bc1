"""The console's segments and broadcasts pages.

Segments: the named segments, and per segment its conditions, exact audience count and first members. Broadcasts:
the list with status, audience and report figures; a form (role ``write``) that builds a broadcast from a named
segment with its audience count, previews the message for a chosen customer, schedules it and creates it; the
broadcast page with its progress and report, and pause, resume and cancel behind a confirmation (``write``, as in
the API). Everything goes through the functions the API's routes call (``api.routes_segments``,
``api.routes_broadcasts``, ``api.broadcasting``, ``api.previews``), so the figures are the API's.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from api import previews, routes_broadcasts
from api.broadcasting import create_and_start, describe
from api.console import previewing, session
from api.console.routes import Refused, needs, read_form, render
from api.routes_deps import pool, settings, temporal
from api.schemas import ApiError
from config.settings import Role
from store import broadcasts as broadcast_store
from store import customers as customer_store
from store import segments as segment_store

router = APIRouter(include_in_schema=False)

MEMBERS_SHOWN = 20
CHANNELS = ("email", "sms", "push")
ACTIONS = ("pause", "resume", "cancel")
# Which actions a broadcast in each status offers (orchestration.broadcasts.TRANSITIONS).
OFFERED = {"scheduled": ("pause", "cancel"), "sending": ("pause", "cancel"), "paused": ("resume", "cancel")}
WRITE: Role = "write"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


READ_PAGE = Depends(needs("read"))
WRITE_PAGE = Depends(needs("write"))


def _ident(value: str, what: str) -> str:
    """A segment or broadcast id from the path (the API's pattern); anything else is a 404 page."""
    if _ID.fullmatch(value) is None:
        raise Refused(404, f"no such {what}")
    return value


# --- segments ---------------------------------------------------------------------------------------------------


@router.get("/console/segments")
async def segments_page(request: Request, current: session.Session = READ_PAGE) -> Response:
    rows = await segment_store.list_segments(pool(request))
    return render(request, current, "segments.html", title="Segments", segments=rows, describe=_conditions)


@router.get("/console/segments/{segment_id}")
async def segment_page(request: Request, segment_id: str, current: session.Session = READ_PAGE) -> Response:
    segment_id = _ident(segment_id, "segment")
    db = pool(request)
    row = await segment_store.get_segment(db, segment_id)
    if row is None:
        raise Refused(404, f"unknown segment '{segment_id}'")
    count, members, elapsed = await _count(db, row, MEMBERS_SHOWN)
    return render(
        request, current, "segment.html", title=f"Segment {row.id}", row=row, conditions=_conditions(row.definition),
        count=count, members=members, milliseconds=elapsed, may_write=current.may(WRITE),
    )  # fmt: skip


async def _count(db: Any, row: segment_store.SegmentRow, sample: int) -> tuple[int, list[str], float]:
    """The exact count and first members, as ``GET /v1/segments/{id}/count`` answers them."""
    audience, now = row.audience(), datetime.now(UTC)
    began = time.perf_counter()

    async def counted() -> tuple[int, float]:
        count = await segment_store.count_members(db, audience, now)
        return count, round((time.perf_counter() - began) * 1000, 1)

    async def first() -> list[str]:
        return await segment_store.member_page(db, audience, now, after=None, limit=sample) if sample else []

    (count, elapsed), members = await asyncio.gather(counted(), first())  # two connections: one wait, not two
    return count, members, elapsed


def _conditions(definition: dict[str, Any]) -> str:
    """The segment's conditions as indented JSON (what ``PUT /v1/segments/{id}`` took)."""
    shown = {k: v for k, v in definition.items() if v not in (None, [], {})}
    return json.dumps(shown, indent=2, ensure_ascii=False, default=str) if shown else "everyone (no condition)"


# --- broadcasts: list and page ----------------------------------------------------------------------------------


@router.get("/console/broadcasts")
async def broadcasts_page(request: Request, current: session.Session = READ_PAGE) -> Response:
    db = pool(request)
    rows = await broadcast_store.list_broadcasts(db)
    lines = []
    for row in rows:
        report = await broadcast_store.report(db, row)
        lines.append({"row": row, "name": row.definition.get("name") or row.id, "report": report})
    return render(request, current, "broadcasts.html", title="Broadcasts", broadcasts=lines,
                  may_write=current.may(WRITE))  # fmt: skip


@router.get("/console/broadcasts/new")
async def new_page(request: Request, segment: str | None = None, current: session.Session = WRITE_PAGE) -> Response:
    values = {"segment": segment or "", "channel": "email", "send_mode": "now"}
    return await _form_page(request, current, values)


@router.post("/console/broadcasts/new")
async def new_post(request: Request, current: session.Session = WRITE_PAGE) -> Response:
    form = await read_form(request, current)
    if any("\x00" in v for v in form.values()):
        raise Refused(400, "the form holds a NUL character")
    action = form.get("do", "count")
    if action == "create":
        try:
            broadcast = routes_broadcasts.parse_broadcast(_definition(form))
            db, client, config = pool(request), temporal(request), settings(request)
            created = await create_and_start(db, client, config, broadcast)
        except ApiError as exc:
            return await _form_page(request, current, form, error=exc, status=exc.status)
        return RedirectResponse(f"/console/broadcasts/{created['id']}?done=create", status_code=303)
    if action == "preview":
        return await _form_page(request, current, form, preview=True)
    return await _form_page(request, current, form)


async def _form_page(
    request: Request,
    current: session.Session,
    values: dict[str, str],
    *,
    preview: bool = False,
    error: ApiError | None = None,
    status: int = 200,
) -> Response:
    """The new-broadcast form with ``values``, the chosen segment's audience count, and the preview if asked."""
    db = pool(request)
    segments = await segment_store.list_segments(db)
    chosen = next((s for s in segments if s.id == values.get("segment")), None)
    count = members = None
    if chosen is not None:
        count, members, _ = await _count(db, chosen, 5)
    elif values.get("segment") and error is None:
        error = ApiError(422, f"unknown segment '{values['segment'][:64]}'", field="segment.ref")
        status = 422
    shown: previews.Preview | None = None
    if preview and error is None:
        try:
            shown = await _preview(request, values, members or [])
        except ApiError as exc:
            error, status = exc, exc.status
    if not values.get("preview_customer") and members:
        values = {**values, "preview_customer": members[0]}
    return render(
        request, current, "broadcast_new.html", status=status, title="New broadcast", values=values,
        segments=segments, chosen=chosen, count=count, error=error, channels=CHANNELS,
        preview=None if shown is None else previewing.shown(shown), shows_preview=shown is not None,
    )  # fmt: skip


async def _preview(request: Request, form: dict[str, str], members: list[str]) -> previews.Preview:
    db, config = pool(request), settings(request)
    customer_id = form.get("preview_customer", "").strip() or (members[0] if members else "")
    if not customer_id:
        raise ApiError(422, "choose a customer to preview the message for", field="preview_customer")
    broadcast = routes_broadcasts.parse_broadcast(_definition(form))
    if len(customer_id) > 256 or await customer_store.get_customer(db, customer_id) is None:
        raise ApiError(404, f"unknown customer '{customer_id[:256]}'", field="preview_customer")
    return await previews.preview(db, config, previews.broadcast_request(broadcast, customer_id, datetime.now(UTC)))


def _definition(form: dict[str, str]) -> dict[str, Any]:
    """The broadcast definition the form describes, as ``POST /v1/broadcasts`` would take it."""
    segment = form.get("segment", "").strip()
    if not segment:
        raise ApiError(422, "choose a named segment", field="segment.ref")
    channel = form.get("channel", "email")
    if channel not in CHANNELS:
        raise ApiError(422, f"channel: one of {', '.join(CHANNELS)}", field="channel")
    subject, text, html = (form.get(k, "").strip() for k in ("subject", "text", "html"))
    template: dict[str, Any]
    if channel == "email":
        template = {"subject": subject, **({"text": text} if text else {}), **({"html": html} if html else {})}
    elif channel == "push":
        template = {"title": subject, "body": text}
    else:
        template = {"text": text}
    definition: dict[str, Any] = {"segment": {"ref": segment}, "channel": channel, "template": template}
    for field in ("id", "name", "topic"):
        if form.get(field, "").strip():
            definition[field] = form[field].strip()
    mode, when = form.get("send_mode", "now"), form.get("send_at", "").strip()
    if mode in ("at", "local"):
        try:
            moment = datetime.fromisoformat(when)
        except ValueError:
            raise ApiError(422, "send_at: a date and time such as 2026-12-05T10:00", field="send_at") from None
        if moment.tzinfo is not None:
            raise ApiError(422, "send_at: give the time without an offset", field="send_at")
        definition["send_at"] = moment.replace(tzinfo=UTC).isoformat() if mode == "at" else {"local": when}
    elif mode != "now":
        raise ApiError(422, "send_mode: now, at or local", field="send_mode")
    return definition


@router.get("/console/broadcasts/{broadcast_id}")
async def broadcast_page(request: Request, broadcast_id: str, current: session.Session = READ_PAGE) -> Response:
    broadcast_id = _ident(broadcast_id, "broadcast")
    try:
        shown = await describe(pool(request), broadcast_id)
    except ApiError as exc:
        raise Refused(exc.status, exc.message) from None
    offered = OFFERED.get(shown["status"], ()) if current.may(WRITE) else ()
    return render(request, current, "broadcast.html", title=f"Broadcast {shown['name']}", b=shown,
                  actions=offered, live=shown["status"] in ("scheduled", "sending"),
                  definition=_conditions(shown["definition"]))  # fmt: skip


# --- pause, resume, cancel --------------------------------------------------------------------------------------


def _action(action: str) -> str:
    if action not in ACTIONS:
        raise Refused(404, "no such page")
    return action


@router.get("/console/broadcasts/{broadcast_id}/{action}")
async def confirm_page(
    request: Request, broadcast_id: str, action: str, current: session.Session = WRITE_PAGE
) -> Response:
    broadcast_id, action = _ident(broadcast_id, "broadcast"), _action(action)
    try:
        shown = await describe(pool(request), broadcast_id)
    except ApiError as exc:
        raise Refused(exc.status, exc.message) from None
    pending, done = shown["progress"]["by_status"].get("pending", 0), shown["progress"]["done"]
    affects = {
        "cancel": ("The ", pending, f" recipient(s) not sent yet will not be sent to, for good ({done} settled already "
                   "stay as they are)."),
        "pause": ("Sending stops within the batch under way; the ", pending,
                  " recipient(s) not sent yet wait until you resume."),
        "resume": ("Sending carries on for the ", pending, " recipient(s) not sent yet."),
    }[action]  # fmt: skip
    return render(
        request, current, "confirm.html", title=f"{action.capitalize()} {shown['name']}", what="broadcast",
        target=shown["name"], action=action, affects=affects, post_to=f"/console/broadcasts/{broadcast_id}/{action}",
        back=f"/console/broadcasts/{broadcast_id}", back_label="Back", danger=action == "cancel",
    )  # fmt: skip


@router.post("/console/broadcasts/{broadcast_id}/{action}")
async def act(request: Request, broadcast_id: str, action: str, current: session.Session = WRITE_PAGE) -> Response:
    broadcast_id, action = _ident(broadcast_id, "broadcast"), _action(action)
    await read_form(request, current)
    db, client = pool(request), temporal(request)
    call = {"pause": routes_broadcasts.pause, "resume": routes_broadcasts.resume, "cancel": routes_broadcasts.cancel}
    try:
        await call[action](broadcast_id, db, client)
    except ApiError as exc:
        raise Refused(exc.status, exc.message) from None
    return RedirectResponse(f"/console/broadcasts/{broadcast_id}?done={action}", status_code=303)
