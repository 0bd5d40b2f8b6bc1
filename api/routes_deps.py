"""What every route shares: the API key and its role (``READ``, ``WRITE``, ``ADMIN``: every route declares one),
the process's pool/client/router, reading a JSON body."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import Depends, Path, Request
from pydantic import BaseModel, ValidationError
from temporalio.client import Client

from api.schemas import CUSTOMER_ID_PATTERN, ApiError
from config.settings import ROLE_RANK, Role, Settings
from orchestration.router import EventRouter
from store import identity as identity_store

M = TypeVar("M", bound=BaseModel)


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


async def read_json(request: Request) -> Any:
    """The body as JSON; 400 naming the position when it is not JSON."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send a JSON document", field="body")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8", field="body") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", field="body"
        ) from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply", field="body") from None


async def read_model(request: Request, model: type[M]) -> M:
    """The body as a JSON object validated by ``model``; 422 naming the first wrong field."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object", field="body")
    try:
        return model.model_validate(data)
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
