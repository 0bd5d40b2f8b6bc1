"""The console's pages under ``/console``, and ``/docs`` with Swagger UI served from the package.

Every page is rendered on the server and reads without JavaScript. Reading needs a session signed in with any
API key; pausing and resuming need the role ``write``, archiving ``admin`` (as in the API). Every form carries
the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from temporalio.client import Client

from api import routes_journeys
from api.console import graph, notices, session
from api.journey_report import JourneyReport, journey_report
from api.routes_deps import event_router, pool, settings, temporal
from api.schemas import ApiError
from config.settings import Role, Settings
from journeys.models import Journey
from orchestration import visibility
from store import customers as customer_store
from store import devices as device_store
from store import events as event_store
from store import identity as identity_store
from store import journeys as journey_store
from store import messages as message_store
from store import reports

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True), auto_reload=False
)
router = APIRouter(include_in_schema=False)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_STEP = re.compile(r"^\$?[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
VISIBILITY_TIMEOUT = timedelta(seconds=3)
ACTIONS: dict[str, Role] = {"pause": "write", "resume": "write", "archive": "admin"}


def policy(*, preview: bool = False) -> str:
    """The console's Content-Security-Policy: nothing from outside, no inline script or style. ``connect-src
    'self'`` lets the console's own scripts ask its own server (the editor's check and live preview, the segment
    counts' refresh). One exception, only where needed: ``preview`` (inline styles) for a page that shows a message
    preview (``templates/preview.html``). The preview is a sandboxed ``srcdoc`` frame (no ``allow-scripts``, no
    ``allow-same-origin``) that inherits the page's policy, and an email's HTML styles itself inline. Scripts stay
    ``'self'`` and images ``'self'`` and ``data:``, so a preview loads nothing from outside (no sender's tracking
    pixel fires)."""
    style = "style-src 'self' 'unsafe-inline'; " if preview else "style-src 'self'; "
    return (
        f"default-src 'none'; {style}script-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": policy(),
}


class Refused(Exception):
    """A console request that gets an HTML page with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def install(app: FastAPI) -> None:
    """The console's routes and static files, and ``/docs`` from local Swagger UI assets."""
    from swagger_ui_bundle import swagger_ui_path

    from api.console import broadcast_pages, customer_pages

    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="swagger-assets")
    from api.console import journey_views  # here: they import this module's helpers
    from api.console.editor import router as editor

    # Before `router`, whose /journeys/{id} and /journeys/{id}/{action} would catch /new, /edit and /versions.
    app.include_router(editor)
    app.include_router(journey_views.router)
    app.include_router(router)
    app.include_router(broadcast_pages.router)
    app.include_router(customer_pages.router)

    @app.exception_handler(_SignIn)
    async def to_sign_in(request: Request, exc: _SignIn) -> Response:
        if request.method != "GET":
            return HTMLResponse("Sign in first.", status_code=401, headers=_HEADERS)
        return RedirectResponse(f"/console/login?next={quote(request.url.path)}", status_code=303)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        current = session.read(request, settings(request))
        return render(
            request, current, "error.html", status=exc.status, title=f"Error {exc.status}", message=exc.message
        )


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title="Parcours API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
    )


# --- rendering and sessions -------------------------------------------------------------------------------------


def render(
    request: Request,
    current: session.Session | None,
    name: str,
    *,
    status: int = 200,
    shows_preview: bool = False,
    **context: Any,
) -> Response:
    """The page ``name`` for the session (a new one, with its cookie, when there is none). ``shows_preview``:
    the page shows a message preview, which its policy allows inline styles for (see ``policy``)."""
    config = settings(request)
    fresh = current is None
    if current is None:
        current = session.Session(session.new_nonce())
    html = _templates.get_template(name).render(
        session=current, csrf=session.csrf_token(config, current), now=datetime.now(UTC),
        notice=notices.from_query(request.query_params), **context,
    )  # fmt: skip
    response = HTMLResponse(html, status_code=status, headers=_HEADERS)
    if shows_preview:
        response.headers["Content-Security-Policy"] = policy(preview=True)
    if fresh:
        session.write(response, config, current)
    return response


def render_fragment(name: str, **context: Any) -> str:
    """A part of a page (``name`` under templates/) as HTML, for a script that swaps it in (the live preview)."""
    return _templates.get_template(name).render(**context)


def signed_in(request: Request) -> session.Session:
    current = session.read(request, settings(request))
    if current is None or current.role is None:
        raise _SignIn()
    return current


class _SignIn(Exception):
    """Not signed in: a page redirects to the sign-in form, a form post gets 401."""


async def read_form(request: Request, current: session.Session) -> dict[str, str]:
    """The urlencoded form, after checking its CSRF token (403 when it does not match the session's)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise Refused(415, "send the form as application/x-www-form-urlencoded")
    raw = await request.body()
    try:
        form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20))
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "the form could not be read") from None
    if not session.csrf_ok(settings(request), current, form.get("csrf")):
        raise Refused(403, "the form's security token does not match this session: reload the page and try again")
    return form


def needs(role: Role) -> Callable[[Request], Awaitable[session.Session]]:
    """A route's dependency: the signed-in session, whose key must have at least ``role``. Not signed in: the
    sign-in page (a form post: 401); too weak a key: a 403 page naming both roles. ``required_role`` is what the
    test that every route declares a role reads, as for the API's ``api.routes_deps.require_role``."""

    async def dependency(request: Request) -> session.Session:
        current = signed_in(request)
        if not current.may(role):
            raise Refused(403, f"your API key has the role '{current.role}'; this needs '{role}'")
        return current

    dependency.required_role = role  # type: ignore[attr-defined]
    return dependency


Reader = Annotated[session.Session, Depends(needs("read"))]
Writer = Annotated[session.Session, Depends(needs("write"))]


# --- sign-in --------------------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/console") and "//" not in target and "\\" not in target and len(target) < 300:
        return target
    return "/console/journeys"


@router.get("/console")
async def home(request: Request) -> Response:
    return RedirectResponse("/console/journeys", status_code=303)


@router.get("/console/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    current = session.read(request, settings(request))
    return render(request, current, "login.html", title="Sign in", next=_safe_next(next), error=None)


@router.post("/console/login")
async def login(request: Request) -> Response:
    config = settings(request)
    current = session.read(request, config)
    if current is None:
        raise Refused(400, "your browser did not send the sign-in cookie: allow cookies for this site and reload")
    form = await read_form(request, current)
    key = form.get("api_key", "").strip()
    target = _safe_next(form.get("next"))
    role = config.role_of(key) if key and len(key) <= 512 else None
    if role is None:
        log.info("console.sign_in_refused")
        return render(request, current, "login.html", status=401, title="Sign in", next=target,
                       error="This API key is not accepted.")  # fmt: skip
    response = RedirectResponse(target, status_code=303)
    session.write(response, config, session.Session(session.new_nonce(), key, role))  # a new nonce: no fixation
    return response


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    current = signed_in(request)
    await read_form(request, current)
    response = RedirectResponse("/console/login", status_code=303)
    session.clear(response, settings(request))
    return response


# --- journeys ---------------------------------------------------------------------------------------------------


async def running_now(client: Client, journey_id: str) -> int | None:
    try:
        return await visibility.count_runs(client, journey_id=journey_id, running=True, rpc_timeout=VISIBILITY_TIMEOUT)
    except Exception as exc:  # best effort, as in the report: the page says "unknown"
        log.warning("console.running_unknown", journey_id=journey_id, error=repr(exc))
        return None


@router.get("/console/journeys")
async def journeys_page(request: Request, current: Reader) -> Response:
    db, client = pool(request), temporal(request)
    rows = await journey_store.list_journeys(db)
    since = datetime.now(UTC) - timedelta(days=7)

    async def figures(journey_id: str) -> tuple[int | None, int, int]:
        filters = reports.Filters(journey_id, None, since, None, None)
        running, entered, converted = await asyncio.gather(
            running_now(client, journey_id), reports.entered(db, filters), reports.conversions(db, filters)
        )
        return running, entered, converted.converted

    results = await asyncio.gather(*(figures(r.id) for r in rows))
    from api.console import journey_views

    trends = await journey_views.trends(db, [r.id for r in rows])
    lines = [
        {"row": row, "running": running, "entered": entered, "converted": converted, "trend": trends[row.id]}
        for row, (running, entered, converted) in zip(rows, results, strict=True)
    ]
    return render(request, current, "journeys.html", title="Journeys", journeys=lines)


def journey_id_or_404(journey_id: str) -> str:
    if not _ID.match(journey_id):
        raise Refused(404, "no such journey")
    return journey_id


async def _report(request: Request, journey_id: str) -> tuple[Any, JourneyReport]:
    db = pool(request)
    row = await journey_store.get_journey(db, journey_id)
    if row is None:
        raise Refused(404, f"unknown journey '{journey_id}'")
    report = await journey_report(db, temporal(request), settings(request), reports.Filters(journey_id))
    assert report is not None
    return row, report


@router.get("/console/journeys/{journey_id}")
async def journey_page(
    request: Request, current: Reader, journey_id: str, step: str | None = None, page: str | None = None
) -> Response:
    journey_id = journey_id_or_404(journey_id)
    row, report = await _report(request, journey_id)
    journey = Journey.model_validate(row.definition)
    figures = {s.step_id: s for s in report.steps}
    laid_out = graph.layout(journey)
    waiting: list[dict[str, Any]] | None = None
    waiting_error = next_page = None
    if step is not None:
        if not _STEP.match(step):
            raise Refused(400, "step: not a step id")
        waiting, waiting_error, next_page = await _waiting(request, journey_id, step, page_token(page))
    from api.console import journey_views

    panels = await journey_views.journey_panels(request, journey_id, journey)
    return render(
        request, current, "journey.html", title=row.name, row=row, report=report, graph=laid_out, figures=figures,
        node_w=graph.NODE_W, node_h=graph.NODE_H, selected=step, waiting=waiting, waiting_error=waiting_error,
        actions=_actions(current, row.status), next_page=next_page, paged=page is not None, **panels,
    )  # fmt: skip


def _actions(current: session.Session, status: str) -> list[str]:
    possible = {"active": ["pause", "archive"], "paused": ["resume", "archive"]}.get(status, [])
    return [a for a in possible if current.may(ACTIONS[a])]


def temporal_ui_base(config: Settings) -> str:
    return (config.temporal_ui_url or f"http://127.0.0.1:{config.temporal_ui_port}").rstrip("/")


def page_token(page: str | None) -> bytes | None:
    """The visibility page token of a ``?page=`` link (URL-safe base64); 400 when it is not one."""
    if page is None:
        return None
    try:
        if len(page) > 4096:
            raise ValueError(page)
        return base64.urlsafe_b64decode(page.encode("ascii") + b"=" * (-len(page) % 4))
    except (ValueError, UnicodeEncodeError):
        raise Refused(400, "page: not a page token of this list") from None


def page_link(token: bytes | None) -> str | None:
    return base64.urlsafe_b64encode(token).decode("ascii").rstrip("=") if token else None


async def _waiting(
    request: Request, journey_id: str, step: str, token: bytes | None = None
) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """One page (``console_page_size``) of the customers running at ``step`` now, with a link to each run in the
    Temporal UI, and the ``?page=`` value of the next page (None: no more)."""
    config, client = settings(request), temporal(request)
    ui = temporal_ui_base(config)
    out: list[dict[str, Any]] = []
    following = None
    try:
        async with asyncio.timeout(VISIBILITY_TIMEOUT.total_seconds() * 2):
            runs, following = await visibility.list_runs_page(
                client, journey_id=journey_id, running=True, step=step, page_size=config.console_page_size,
                page_token=token,
            )  # fmt: skip
            for run in runs:
                out.append({
                    "customer_id": run.customer_id,
                    "version": run.version,
                    "started_at": run.started_at,
                    "temporal_url": f"{ui}/namespaces/{quote(config.temporal_namespace, safe='')}/workflows/"
                    f"{quote(run.workflow_id, safe='')}/{quote(run.run_id or '', safe='')}/history",
                })  # fmt: skip
    except Exception as exc:
        log.warning("console.waiting_unknown", journey_id=journey_id, error=repr(exc))
        return out, f"Temporal did not answer ({type(exc).__name__}): the list may be incomplete", None
    return out, None, page_link(following)


@router.get("/console/journeys/{journey_id}/{action}")
async def confirm_page(request: Request, current: Writer, journey_id: str, action: str) -> Response:
    journey_id = journey_id_or_404(journey_id)
    if action not in ACTIONS:
        raise Refused(404, "no such page")
    if not current.may(ACTIONS[action]):
        raise Refused(
            403, f"your API key has the role '{current.role}'; to {action} a journey needs '{ACTIONS[action]}'"
        )
    row = await journey_store.get_journey(pool(request), journey_id)
    if row is None:
        raise Refused(404, f"unknown journey '{journey_id}'")
    running = await running_now(temporal(request), journey_id)
    return render(
        request, current, "confirm.html", title=f"{action.capitalize()} {row.name}", what="journey", target=row.name,
        action=action, affects=_affects(action, running), post_to=f"/console/journeys/{row.id}/{action}",
        back=f"/console/journeys/{row.id}", back_label="Cancel", danger=action == "archive",
    )  # fmt: skip


def _affects(action: str, running: int | None) -> tuple[str, int | None, str]:
    """What a journey action does to the customers running now, around their number (``confirm.html``)."""
    if running is None:
        return "Temporal did not answer: how many customers are running now is unknown.", None, ""
    if action == "archive":
        return ("This affects ", running, " customer(s) running now: they leave the journey at once (exit reason "
                "“archived”), and nobody enters any more.")  # fmt: skip
    if action == "pause":
        return (
            "This affects ",
            running,
            " customer(s) running now: they carry on, but nobody new enters until you resume.",
        )
    return "New customers enter again. The ", running, " customer(s) running now carry on as before."


@router.post("/console/journeys/{journey_id}/{action}")
async def act(request: Request, current: Writer, journey_id: str, action: str) -> Response:
    journey_id = journey_id_or_404(journey_id)
    if action not in ACTIONS:
        raise Refused(404, "no such page")
    if not current.may(ACTIONS[action]):
        raise Refused(
            403, f"your API key has the role '{current.role}'; to {action} a journey needs '{ACTIONS[action]}'"
        )
    await read_form(request, current)
    db, router_, client, config = pool(request), event_router(request), temporal(request), settings(request)
    try:
        if action == "pause":
            await routes_journeys.pause(journey_id, db, router_, client, config)
        elif action == "resume":
            await routes_journeys.resume(journey_id, db, router_, client, config)
        else:
            await routes_journeys.archive(journey_id, db, router_, client)
    except ApiError as exc:
        raise Refused(exc.status, exc.message) from None
    log.info("console.journey_action", journey_id=journey_id, action=action, role=current.role)
    return RedirectResponse(f"/console/journeys/{journey_id}?done={action}", status_code=303)


# --- customers --------------------------------------------------------------------------------------------------


@router.get("/console/customers")
async def customers_page(request: Request, current: Reader, q: str | None = None) -> Response:
    found = None
    query = (q or "").strip()
    if query:
        if len(query) > 320 or "\x00" in query:
            raise Refused(400, "q: at most 320 characters, no NUL")
        found = await customer_store.find_customers(pool(request), query)
    return render(request, current, "customers.html", title="Customers", q=query, found=found)


async def customer_or_404(request: Request, customer_id: str) -> customer_store.Customer:
    """The customer under ``customer_id`` or any of its aliases (a 404 page when there is none)."""
    if len(customer_id) > 256 or "\x00" in customer_id:
        raise Refused(404, "no such customer")
    db = pool(request)
    customer = await customer_store.get_customer(db, await identity_store.resolve_customer(db, customer_id))
    if customer is None:
        raise Refused(404, f"unknown customer '{customer_id}'")
    return customer


@router.get("/console/customers/{customer_id}")
async def customer_page(request: Request, current: Reader, customer_id: str) -> Response:
    customer = await customer_or_404(request, customer_id)
    db, resolved = pool(request), customer.id
    consent, devices, events, messages, merges, runs = await asyncio.gather(
        customer_store.current_consent(db, resolved),
        device_store.devices_of(db, resolved),
        event_store.recent_of(db, resolved, limit=20),
        message_store.messages_with_choice(db, resolved, limit=20),
        identity_store.merges(db, resolved, limit=20),
        _runs_of(request, resolved),
    )
    return render(
        request, current, "customer.html", title=f"Customer {resolved}", customer=customer, asked=customer_id,
        consent=consent, devices=devices, events=events, messages=messages, merges=merges, runs=runs[0],
        runs_error=runs[1], ui=temporal_ui_base(settings(request)),
    )  # fmt: skip


async def _runs_of(request: Request, customer_id: str) -> tuple[list[dict[str, Any]], str | None]:
    client = temporal(request)
    out: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(VISIBILITY_TIMEOUT.total_seconds() * 2):
            for run in await visibility.list_runs(client, customer_id=customer_id, running=True, limit=50):
                out.append({
                    "journey_id": run.journey_id, "version": run.version, "step": run.step,
                    "started_at": run.started_at,
                })  # fmt: skip
    except Exception as exc:
        log.warning("console.runs_unknown", customer_id=customer_id, error=repr(exc))
        return out, f"Temporal did not answer ({type(exc).__name__})"
    return out, None
