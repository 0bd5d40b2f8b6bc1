"""What every route shares: the API key check, the process's pool/client/router, reading a JSON body."""

from __future__ import annotations

import hmac
import json
import re
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import Depends, Path, Request
from pydantic import BaseModel, ValidationError
from temporalio.client import Client

from api.schemas import CUSTOMER_ID_PATTERN, ApiError
from config.settings import Settings
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


async def require_api_key(request: Request) -> None:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, one of ``settings.api_keys``."""
    key = request.headers.get("x-api-key")
    auth = request.headers.get("authorization")
    if key is None and auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            key = value.strip()
    if not key:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'", field="authorization")
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in settings(request).api_keys):
        raise ApiError(401, "invalid API key", field="authorization")


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
