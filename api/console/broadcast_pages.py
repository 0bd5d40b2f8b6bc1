"""The console's segments and broadcasts pages.

Segments: the named segments, and per segment its conditions, audience count and first members as the last exact
count kept them (``api.segment_counts``: shown at once, never waiting on a scan; recounted in the background when
stale; "Count now" for role ``write``). Broadcasts: the list with status, audience and report figures; a form (role
``write``) that builds a broadcast from a named segment with its audience count (kept, as on the segment page;
"Count the audience" recounts), previews the message for a chosen customer, schedules it and creates it; the
broadcast page with its progress and report, and pause, resume and cancel behind a confirmation (``write``, as in
the API). Everything goes through the functions the API's routes call (``api.routes_segments``,
``api.routes_broadcasts``, ``api.broadcasting``, ``api.previews``), so the figures are the API's.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from api import previews, routes_broadcasts, segment_counts
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
    db = pool(request)
    rows = await segment_store.list_segments(db)
    kept = await segment_store.stored_counts(db, rows)  # shown as they are: the list starts no recount
    return render(request, current, "segments.html", title="Segments", segments=rows, describe=_conditions,
                  kept=kept, ago=segment_counts.ago)  # fmt: skip


RECOUNT_NOTICES = {
    "started": "Counting now: reload in a moment to see the new count.",
    "counting": "A count of this segment is already under way: reload in a moment to see it.",
    "busy": "Other segments are being counted: try again in a moment.",
}


@router.get("/console/segments/{segment_id}")
async def segment_page(
    request: Request, segment_id: str, recount: str | None = None, current: session.Session = READ_PAGE
) -> Response:
    row = await _segment_or_404(request, segment_id)
    shown = await _reach(request, row)
    members = shown.count.sample[:MEMBERS_SHOWN] if shown.count is not None else []
    return render(
        request, current, "segment.html", title=f"Segment {row.id}", row=row, conditions=_conditions(row.definition),
        reach=shown, members=members, may_write=current.may(WRITE), recount=RECOUNT_NOTICES.get(recount or ""),
    )  # fmt: skip


@router.get("/console/segments/{segment_id}/count.json")
async def segment_count_json(request: Request, segment_id: str, current: session.Session = READ_PAGE) -> Response:
    """What the console's script polls while a recount runs: the kept count and whether one is under way. It
    starts nothing."""
    row = await _segment_or_404(request, segment_id)
    kept = await segment_store.stored_count(pool(request), row)
    now = datetime.now(UTC)
    body = {
        "id": row.id,
        "counting": segment_counts.recounts(request).counting(row.id),
        "count": kept.members if kept is not None else None,
        "exact_as_of": kept.exact_as_of.isoformat() if kept is not None else None,
        "age": segment_counts.ago(kept.age_seconds(now)) if kept is not None else None,
        "milliseconds": kept.milliseconds if kept is not None else None,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


@router.post("/console/segments/{segment_id}/count")
async def count_now(request: Request, segment_id: str, current: session.Session = WRITE_PAGE) -> Response:
    """The "Count now" button: an exact count in the background, whatever the age of the kept one (``write``)."""
    row = await _segment_or_404(request, segment_id)
    await read_form(request, current)
    started = segment_counts.recounts(request).start(row)
    return RedirectResponse(f"/console/segments/{row.id}?recount={started}", status_code=303)


async def _segment_or_404(request: Request, segment_id: str) -> segment_store.SegmentRow:
    segment_id = _ident(segment_id, "segment")
    row = await segment_store.get_segment(pool(request), segment_id)
    if row is None:
        raise Refused(404, f"unknown segment '{segment_id}'")
    return row


async def _reach(request: Request, row: segment_store.SegmentRow) -> segment_counts.Reach:
    """The kept count, never a scan: a recount starts in the background when it is missing or stale."""
    max_age = settings(request).segment_count_max_age_seconds
    return await segment_counts.reach(request, pool(request), row, max_age)


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
    return await _form_page(request, current, form, recount=True)  # "Count the audience"


async def _form_page(
    request: Request,
    current: session.Session,
    values: dict[str, str],
    *,
    preview: bool = False,
    recount: bool = False,
    error: ApiError | None = None,
    status: int = 200,
) -> Response:
    """The new-broadcast form with ``values``, the chosen segment's kept audience count (a recount in the
    background when it is stale, or when ``recount``), and the preview if asked."""
    db = pool(request)
    segments = await segment_store.list_segments(db)
    chosen = next((s for s in segments if s.id == values.get("segment")), None)
    shown: segment_counts.Reach | None = None
    members: list[str] = []
    if chosen is not None:
        if recount:
            segment_counts.recounts(request).start(chosen)
        shown = await _reach(request, chosen)
        members = shown.count.sample[:5] if shown.count is not None else []
    elif values.get("segment") and error is None:
        error = ApiError(422, f"unknown segment '{values['segment'][:64]}'", field="segment.ref")
        status = 422
    previewed: previews.Preview | None = None
    if preview and error is None:
        try:
            previewed = await _preview(request, values, members)
        except ApiError as exc:
            error, status = exc, exc.status
    if not values.get("preview_customer") and members:
        values = {**values, "preview_customer": members[0]}
    return render(
        request, current, "broadcast_new.html", status=status, title="New broadcast", values=values,
        segments=segments, chosen=chosen, reach=shown, error=error, channels=CHANNELS,
        preview=None if previewed is None else previewing.shown(previewed), shows_preview=previewed is not None,
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
