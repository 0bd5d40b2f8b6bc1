"""Click and open tracking (public, no API key: the sealed token in the path is the credential).

``GET /c/{token}`` answers a 302 to the link the token was made for, at once, and records a click:
``email_clicked`` (``sms_clicked``, ``push_opened``) with properties ``journey``, ``step``, ``message_key``,
``link`` and ``channel``. ``GET /o/{token}`` answers a 1x1 GIF that is never cached and records
``email_opened`` with ``machine`` (see ``is_machine_open``).

Before answering, the event is stored and counted on its message in one statement (with the alias lock every
event takes): a couple of milliseconds, no Temporal call. Routing it to journeys (``wait_for: email_clicked``)
runs after the answer went out; if that fails the event stays in the outbox and the router's drainer delivers it.

Event ids: ``sha256(token, 10-second bucket)``. A prefetch, a scanner's retry or a double-click within the same
ten-second bucket is one click; the customer clicking the same link again later is another click. A click on a
link of a message that is not (or no longer) in ``messages`` (its customer was erased) records nothing but still
redirects. An altered, truncated or expired token is a 400 page: the token is the only source of the target, so
there is no open redirect.
"""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import asyncpg
import structlog
from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import HTMLResponse, Response

from activities import links
from activities.tracking import is_trackable
from api import preference_pages as pages
from api.routes_deps import event_router, pool, settings
from config.settings import Settings
from contracts.journey import Event
from orchestration.router import EventRouter
from store import engagement

log = structlog.get_logger(__name__)

router = APIRouter(tags=["tracking"])

Pool = Annotated[asyncpg.Pool, Depends(pool)]
AppSettings = Annotated[Settings, Depends(settings)]
Router = Annotated[EventRouter, Depends(event_router)]

CLICK_EVENTS = {"email": "email_clicked", "sms": "sms_clicked", "push": "push_opened"}
OPEN_EVENT = "email_opened"
DEDUPE_SECONDS = 10
_MAX_TOKEN = 4096
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
# A URL may carry characters a header cannot (non-ASCII, spaces, line breaks): percent-encode those only.
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~-._"

# Who fetches images without the customer looking, by User-Agent (case-insensitive substrings). Apple Mail
# Privacy Protection's proxy sends exactly "Mozilla/5.0" (and some prefetchers send nothing): see is_machine_open.
MACHINE_AGENTS = (
    "googleimageproxy",  # Gmail's image proxy ("... (via ggpht.com GoogleImageProxy)")
    "ggpht.com",
    "yahoomailproxy",  # Yahoo and AOL Mail
    "bot",  # crawlers and link-preview bots
    "crawler",
    "spider",
    "preview",
    "headless",  # scripted browsers
    "python-",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
    "barracuda",  # mail security gateways that fetch everything
    "mimecast",
    "proofpoint",
)


def is_machine_open(user_agent: str | None, sent_at: Any, now: float, machine_seconds: float) -> bool:
    """Whether an open is a machine's rather than the customer's.

    A machine: no User-Agent, or exactly ``Mozilla/5.0`` (Apple Mail Privacy Protection); a User-Agent containing
    one of ``MACHINE_AGENTS`` (Google Image Proxy, Yahoo Mail Proxy, bots, scripted clients, security gateways);
    or an open within ``machine_seconds`` (``tracking_machine_open_seconds``) of delivery, which is a mailbox
    fetching images on arrival.
    """
    agent = (user_agent or "").strip().lower()
    if agent in ("", "mozilla/5.0"):
        return True
    if any(marker in agent for marker in MACHINE_AGENTS):
        return True
    return isinstance(sent_at, int | float) and now - float(sent_at) < machine_seconds


def _invalid(status: int = 400) -> HTMLResponse:
    page = pages.message_page(
        "This link is not valid",
        "The link may have been changed, cut off when it was copied, or be too old. "
        "Open it again from a recent message from us, or copy the whole address.",
    )
    return HTMLResponse(page, status_code=status, headers={**pages.headers(), **_NO_CACHE})


def _payload(config: Settings, token: str, purpose: str) -> dict[str, Any] | None:
    """The token's payload, or None when it is altered, truncated, made for something else or expired."""
    if len(token) > _MAX_TOKEN:
        return None
    try:
        payload = links.open_token(config, token, purpose=purpose)
    except links.InvalidLink:  # ExpiredLink included
        return None
    fields = ("c", "k", "j", "s", "ch")
    if not all(isinstance(payload.get(name), str) and payload[name] for name in fields):
        return None
    return payload


def _event_id(kind: str, token: str, now: float, *extra: str) -> str:
    bucket = int(now // DEDUPE_SECONDS)
    digest = hashlib.sha256("\x00".join((kind, token, str(bucket), *extra)).encode()).hexdigest()
    return f"{kind}-{digest[:40]}"


async def _route(router_: EventRouter, event: Event) -> None:
    try:
        await router_.route_stored([event])
    except Exception as exc:  # the event is stored: the drainer routes it
        log.warning("tracking.route_failed", event_id=event.event_id, error=repr(exc))


async def _record(db: asyncpg.Pool, event: Event, message_key: str, machine: bool | None = None) -> Event | None:
    """Store the event and count it on its message (``store.engagement.store_event``); the event as stored (under
    the customer it resolved to) when it is new, else None.

    The customer gets their page or image whatever happens here: a failure loses this one record, not the visit.
    """
    try:
        async with db.acquire() as conn:
            customer_id = await engagement.store_event(conn, event, message_key, machine=machine)
    except Exception as exc:
        log.warning("tracking.record_failed", event_id=event.event_id, name=event.name, error=repr(exc))
        return None
    return None if customer_id is None else event.model_copy(update={"customer_id": customer_id})


async def click(
    token: str, request: Request, background: BackgroundTasks, db: Pool, config: AppSettings, router_: Router
) -> Response:
    """302 to the link's original URL, recording the click (a HEAD, which link checkers send, records nothing).
    A tampered, truncated or expired token: a 400 page, no redirect."""
    payload = _payload(config, token, links.CLICK)
    link = payload.get("l") if payload else None
    if payload is None or not isinstance(link, str) or not is_trackable(link) or payload["ch"] not in CLICK_EVENTS:
        return _invalid()
    if request.method == "GET":
        now = time.time()
        at = datetime.fromtimestamp(now, UTC)
        event = Event(
            event_id=_event_id("click", token, now),
            customer_id=payload["c"],
            name=CLICK_EVENTS[payload["ch"]],
            properties={
                "journey": payload["j"],
                "step": payload["s"],
                "message_key": payload["k"],
                "link": link,
                "channel": payload["ch"],
            },
            occurred_at=at,
        )
        stored = await _record(db, event, payload["k"])
        if stored is not None:
            background.add_task(_route, router_, stored)
    return Response(
        status_code=302,
        headers={"Location": quote(link.strip(), safe=_URL_SAFE), "Referrer-Policy": "no-referrer", **_NO_CACHE},
    )


# GET and HEAD as two operations, each with its own id (one route for both gives them the same operation id).
for _method, _operation, _summary in (
    ("GET", "follow_tracked_link", "Follow a tracked link"),
    ("HEAD", "check_tracked_link", "Check a tracked link (records nothing)"),
):
    router.add_api_route(
        "/c/{token}", click, methods=[_method], response_class=Response, summary=_summary, operation_id=_operation
    )


@router.get("/o/{token}", response_class=Response, summary="Open pixel")
async def open_pixel(
    token: str, request: Request, background: BackgroundTasks, db: Pool, config: AppSettings, router_: Router
) -> Response:
    """A 1x1 transparent GIF, never cached, recording ``email_opened`` (``machine``: true for proxies, prefetchers
    and opens right after delivery). A bad token records nothing and answers the same image with status 400."""
    payload = _payload(config, token, links.OPEN)
    if payload is None:
        return Response(PIXEL, status_code=400, media_type="image/gif", headers=_NO_CACHE)
    now = time.time()
    at = datetime.fromtimestamp(now, UTC)
    machine = is_machine_open(
        request.headers.get("user-agent"), payload.get("t"), now, config.tracking_machine_open_seconds
    )
    event = Event(
        event_id=_event_id("open", token, now, str(machine)),
        customer_id=payload["c"],
        name=OPEN_EVENT,
        properties={
            "journey": payload["j"],
            "step": payload["s"],
            "message_key": payload["k"],
            "channel": payload["ch"],
            "machine": machine,
        },
        occurred_at=at,
    )
    stored = await _record(db, event, payload["k"], machine)
    if stored is not None:
        background.add_task(_route, router_, stored)
    return Response(PIXEL, media_type="image/gif", headers=_NO_CACHE)
