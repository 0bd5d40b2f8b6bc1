"""The HTTP API: ``create_app(settings, pool=..., client=...)``.

The caller owns the PostgreSQL pool and the Temporal client; the app's lifespan runs the event router's outbox
drainer and stops it on shutdown, and cancels the console's background segment counts (``api.segment_counts``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from api import (
    console,
    routes_broadcasts,
    routes_customers,
    routes_devices,
    routes_events,
    routes_health,
    routes_identity,
    routes_journeys,
    routes_metrics,
    routes_preferences,
    routes_previews,
    routes_privacy,
    routes_reports,
    routes_runs,
    routes_segments,
    routes_sms,
    routes_suppressions,
    routes_tracking,
    validation,
)
from api.routes_deps import validation_field
from api.schemas import ApiError, ErrorBody, printable
from api.segment_counts import Recounts
from config.settings import Settings
from orchestration.router import EventRouter

log = structlog.get_logger(__name__)

# Errors that mean PostgreSQL cannot be reached (the API answers 503, not 500).
DATABASE_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    TimeoutError,
)


UNSTORABLE = (asyncpg.DataError, asyncpg.exceptions._base.DataError, UnicodeEncodeError)


def create_app(settings: Settings, *, pool: asyncpg.Pool, client: Client) -> FastAPI:
    router = EventRouter(pool, client, settings)
    recounts = Recounts(pool, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        checks = await validation.acquire(settings)  # the validation processes start now, not on first use
        try:
            async with run_drainer(router):
                yield
        finally:
            await recounts.close()  # background segment counts: none left running
            await validation.release(checks)

    app = FastAPI(
        title="Parcours",
        version="1",
        description="Customer journeys on Temporal: send events, manage customers and consent, publish journeys.",
        lifespan=lifespan,
        docs_url=None,  # served by api.console from local Swagger UI assets: no CDN
        redoc_url=None,
        responses={401: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.client = client
    app.state.router = router
    app.state.segment_recounts = recounts

    app.include_router(routes_health.router)
    app.include_router(routes_metrics.router)  # a read key unless PARCOURS_METRICS_PUBLIC
    app.include_router(routes_preferences.router)  # public pages by sealed link; topics need the API key
    app.include_router(routes_tracking.router)  # public: tracked links and the open pixel, by sealed token
    # Every route under /v1 declares the role its API key needs (api.routes_deps READ, WRITE, ADMIN).
    for module in (
        routes_events,
        routes_customers,
        routes_devices,
        routes_identity,
        routes_journeys,
        routes_reports,
        routes_runs,
        routes_segments,
        routes_broadcasts,
        routes_previews,
        routes_suppressions,
    ):
        app.include_router(module.router)
    app.include_router(routes_privacy.router)  # provider webhooks also take Basic credentials
    app.include_router(routes_sms.router)  # Twilio's callbacks: authenticated by X-Twilio-Signature
    _install_error_handlers(app)
    console.install(app)  # /console pages and /docs (after the error handlers: its own take precedence)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(QueryGuardMiddleware)
    return app


@contextlib.asynccontextmanager
async def run_drainer(router: EventRouter) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``router.drain`` in the background for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(router.drain(stop), name="parcours-event-drainer")
    try:
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=15)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _error(status: int, message: str, field: str | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": printable(message), "field": printable(field), **extra}}, status_code=status
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        message, field = validation_field(errors)
        if field and field.startswith(("path.", "query.", "header.")):
            field = field.split(".", 1)[1]
        return _error(422, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), None)

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("api.database_unavailable", path=request.url.path, error=repr(exc))
        return JSONResponse(
            {"error": {"message": "the database is unavailable, retry later", "field": None}},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    for error_type in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error_type, database_unavailable)

    async def unstorable(request: Request, exc: Exception) -> JSONResponse:
        # Last line of defence: input checks should have named the field before PostgreSQL saw the value.
        log.warning("api.unstorable_value", path=request.url.path, error=repr(exc)[:500])
        return _error(422, "a value in the request cannot be stored", None)

    # PostgreSQL's data exceptions (class 22), and asyncpg's refusal to encode an argument (a subclass of
    # InterfaceError, which would otherwise read as "database unavailable").
    for unstorable_type in UNSTORABLE:
        app.add_exception_handler(unstorable_type, unstorable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unexpected_error", path=request.url.path)
        return _error(500, "internal error", None)


class QueryGuardMiddleware:
    """400 naming the parameter for a query string no API route can take: a NUL character (PostgreSQL text
    cannot hold it), or a parameter longer than any the API defines."""

    MAX_PARAMETER = 4096

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = self._problem(scope)
            if problem is not None:
                await _respond(send, _error(400, problem[1], problem[0]))
                return
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope) -> tuple[str, str] | None:
        # Path parameters are checked by their routes' patterns; public pages (HTML) read no query string.
        path = scope.get("path", "")
        raw = scope.get("query_string", b"")
        if not raw or not path.startswith("/v1/") or path.startswith("/v1/unsubscribe/"):
            return None
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8"):
            field = name[:50] or "query"
            if "\x00" in name or "\x00" in value:
                return field, f"{field}: contains a NUL character"
            if len(value) > self.MAX_PARAMETER:
                return field, f"{field}: longer than {self.MAX_PARAMETER} characters"
        return None


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``: by Content-Length up front, and by counting what actually arrives.

    The body is read here (at most ``max_bytes``) and replayed to the app, so an oversized chunked upload is
    refused before any route sees it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _respond(send, _error(400, "invalid Content-Length", "content-length"))
                return
            if declared > self.max_bytes:
                await _respond(send, self._too_large())
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _respond(send, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> JSONResponse:
        return _error(413, f"the request body is larger than {self.max_bytes} bytes", "body")


async def _respond(send: Send, response: JSONResponse) -> None:
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
