"""What every route shares: the API key and its role (``READ``, ``WRITE``, ``ADMIN``: every route declares one),
the process's pool/client/router, reading a JSON body."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import Depends, Path, Request
from pydantic import BaseModel, ValidationError
from temporalio.client import Client

from api import validation
from api.schemas import CUSTOMER_ID_PATTERN, ApiError
from config.settings import ROLE_RANK, Role, Settings
from journeys.values import InputError, InputLimits, limits_from, loads_json
from orchestration.router import EventRouter
from store import identity as identity_store

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


def settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool  # type: ignore[no-any-return]


def temporal(request: Request) -> Client:
    return request.app.state.client  # type: ignore[no-any-return]


def event_router(request: Request) -> EventRouter:
    return request.app.state.router  # type: ignore[no-any-return]


def presented_key(request: Request) -> str | None:
    """The key of ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    key = request.headers.get("x-api-key")
    auth = request.headers.get("authorization")
    if key is None and auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            key = value.strip()
    return key or None


def check_role(request: Request, key: str | None, needed: Role) -> Role:
    """The role of ``key``: 401 when it is missing or unknown, 403 naming both roles when it is too weak."""
    if not key:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'", field="authorization")
    role = settings(request).role_of(key)
    if role is None:
        raise ApiError(401, "invalid API key", field="authorization")
    if ROLE_RANK[role] < ROLE_RANK[needed]:
        raise ApiError(
            403, f"this API key has the role '{role}'; this route needs the role '{needed}'", field="authorization"
        )
    return role


def require_role(needed: Role) -> Callable[[Request], Awaitable[Role]]:
    """A dependency: the request's API key must have at least the role ``needed`` (read < write < admin)."""

    async def dependency(request: Request) -> Role:
        return check_role(request, presented_key(request), needed)

    dependency.required_role = needed  # type: ignore[attr-defined]  # read by tests and the OpenAPI check
    return dependency


READ = Depends(require_role("read"))
"""Reading: profiles, consent, journeys, reports, lists."""
WRITE = Depends(require_role("write"))
"""Changing what journeys act on: events, profiles, consent, identity, journeys, adding suppressions."""
ADMIN = Depends(require_role("admin"))
"""What cannot be undone or exposes everything about a person: erasure, export, lifting suppressions, topics,
archiving a journey."""


async def require_api_key(request: Request) -> None:
    """Any valid API key, whatever its role."""
    check_role(request, presented_key(request), "read")


# Bodies up to this size are checked on the event loop (microseconds); larger ones in a validation process.
_INLINE_BODY_BYTES = 65_536


def input_limits(request: Request) -> InputLimits:
    limits: InputLimits | None = getattr(request.app.state, "input_limits", None)
    if limits is None:
        limits = request.app.state.input_limits = limits_from(settings(request))
    return limits


async def off_loop(request: Request, function: Callable[..., R], *args: Any) -> R:
    """Run CPU-heavy ``function(*args)`` in the validation processes (``api.validation``): 429 with Retry-After when
    they are all busy and the queue is full, 422 naming the body when the check runs past its time limit."""
    config = settings(request)
    try:
        return await validation.shared(config).run(function, *args)
    except validation.Busy as exc:
        raise ApiError(
            429,
            f"too many large bodies are being checked: retry after {exc.retry_after} s",
            field="body",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    except validation.TooSlow as exc:
        raise ApiError(
            422,
            f"checking this body took longer than {exc.seconds:g} s (PARCOURS_VALIDATION_TIMEOUT_SECONDS): "
            "make it smaller or simpler",
            field="body",
        ) from None


async def read_json(request: Request, *, check: bool = True) -> Any:
    """The body as JSON, every value checked (``journeys.values``): 400 naming the position when it is not JSON,
    422 naming the field for a value that cannot be taken (NaN, a huge integer, NUL, a lone surrogate, too deep).

    ``check=False``: the caller checks the values itself with ``check_value`` (a batch, item by item)."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send a JSON document", field="body")
    limits = input_limits(request)
    try:
        if len(raw) <= _INLINE_BODY_BYTES:
            return loads_json(raw, limits, check=check)
        return await off_loop(request, functools.partial(loads_json, check=check), raw, limits)
    except InputError as exc:
        status = 400 if exc.field == "body" and exc.message.startswith(("malformed", "not UTF-8")) else 422
        raise ApiError(status, str(exc) if exc.field != "body" else exc.message, field=exc.field) from None


async def read_model(request: Request, model: type[M]) -> M:
    """The body as a JSON object validated by ``model``; 422 naming the first wrong field."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object", field="body")
    try:
        return model.model_validate(data, context={"limits": input_limits(request)})
    except ValidationError as exc:
        message, field = validation_field(exc.errors())  # type: ignore[arg-type]
        raise ApiError(422, message, field=field) from None


def validation_field(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """The first pydantic error as (message, dotted field)."""
    if not errors:
        return "invalid input", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    field = ".".join(loc) or None
    if field is None and re.match(r"^[a-z_]+: ", message):  # a model-level check names its field first
        field, message = message.split(": ", 1)
    return (f"{field}: {message}" if field else message), field


async def resolved_customer(
    request: Request,
    customer_id: Annotated[
        str, Path(pattern=CUSTOMER_ID_PATTERN, description="The customer id (a merged profile id or anon:{id} too)")
    ],
) -> str:
    """The customer a path id stands for: a profile merged into another (``anon:{id}`` too) is that customer."""
    return await identity_store.resolve_customer(pool(request), customer_id)


ResolvedCustomer = Annotated[str, Depends(resolved_customer)]
