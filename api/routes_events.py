"""POST /v1/events: one event or a batch, stored idempotently and routed to journeys; the dead letters (events a
run refused for a reason of its own), listed and retried."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from api.routes_deps import READ, WRITE, event_router, input_limits, pool, read_json, settings, validation_field
from api.schemas import EVENT_ID_PATTERN, ApiError, ErrorDetail, EventIn, EventResult, EventsResponse
from config import metrics
from contracts.journey import Event
from journeys.values import InputError, check_value
from orchestration.router import EventRouter
from store import events as event_store

router = APIRouter(tags=["events"])

_EVENT_SCHEMA = EventIn.model_json_schema()
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _EVENT_SCHEMA,
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {"events": {"type": "array", "items": _EVENT_SCHEMA}},
                        },
                    ]
                }
            }
        },
    }
}


@router.post(
    "/v1/events",
    dependencies=[WRITE],
    status_code=202,
    response_model=EventsResponse,
    openapi_extra=_BODY_DOC,
    summary="Send one event or a batch",
    description=(
        "An event names its customer by `customer_id`, by `alias` (an email or phone linked with "
        "`POST /v1/identify`) or by `anonymous_id` (a visitor not identified yet); each result says which "
        "customer it resolved to. "
        "Each event is stored once by its `event_id` (generated when absent) and routed to the journeys it "
        "triggers or that wait for it. Per event: `accepted`, `duplicate` (that id was stored before) or "
        "`invalid` (with the field); invalid items do not block the valid ones. If Temporal is unreachable the "
        "events are still accepted and routed as soon as it answers."
    ),
)
async def post_events(request: Request, router_: Annotated[EventRouter, Depends(event_router)]) -> JSONResponse:
    body = await read_json(request, check=False)  # each event's values are checked with it, below
    if isinstance(body, dict) and "events" in body:
        items = body["events"]
        if not isinstance(items, list):
            raise ApiError(422, "'events' must be a list of event objects", field="events")
        if set(body) - {"events"}:
            extra = sorted(set(body) - {"events"})[0]
            raise ApiError(422, f"unexpected field '{extra}' next to 'events'", field=extra)
    elif isinstance(body, dict):
        items = [body]
    else:
        raise ApiError(422, 'send an event object or {"events": [...]}', field="body")
    limit = settings(request).max_batch_events
    if not items:
        raise ApiError(422, "'events' is empty", field="events")
    if len(items) > limit:
        raise ApiError(422, f"at most {limit} events per request (got {len(items)})", field="events")

    results: list[EventResult | None] = [None] * len(items)
    valid: list[tuple[int, Event]] = []
    keys: list[tuple[str, str, str | None]] = []
    limits = input_limits(request)
    context = {"limits": limits}
    batch = isinstance(body, dict) and "events" in body
    for index, item in enumerate(items):
        event_id = item.get("event_id") if isinstance(item, dict) else None
        try:
            check_value(item, limits, depth=2 if batch else 0)  # a batch's events sit two levels down
            parsed = EventIn.model_validate(item, context=context)
            valid.append((index, parsed.to_event()))
            keys.append(parsed.identity())
        except InputError as exc:
            results[index] = _invalid(index, event_id, f"{exc.field}: {exc.message}", exc.field)
        except ValidationError as exc:
            message, field = validation_field(exc.errors())  # type: ignore[arg-type]
            results[index] = _invalid(index, event_id, message, field)
    if len(valid) < len(items):
        metrics.EVENTS.labels(status="invalid").inc(len(items) - len(valid))
    outcomes = await router_.ingest([event for _, event in valid], keys) if valid else []
    for (index, event), outcome, key in zip(valid, outcomes, keys, strict=True):
        if outcome.status == "unknown_customer":
            results[index] = EventResult(
                index=index,
                event_id=event.event_id,
                status="invalid",
                error=ErrorDetail(
                    message=f"no customer is linked to {key[0]} '{key[1]}' (link it with POST /v1/identify)",
                    field="alias",
                ),
            )
            continue
        results[index] = EventResult(
            index=index,
            event_id=event.event_id,
            status=outcome.status,
            customer_id=outcome.customer_id,
            routed=outcome.routed,
        )
    final = [r for r in results if r is not None]
    response = EventsResponse(
        accepted=sum(r.status == "accepted" for r in final),
        duplicates=sum(r.status == "duplicate" for r in final),
        invalid=sum(r.status == "invalid" for r in final),
        results=final,
    )
    return JSONResponse(response.model_dump(mode="json"), status_code=202)


def _invalid(index: int, event_id: Any, message: str, field: str | None) -> EventResult:
    return EventResult(
        index=index,
        event_id=event_id if isinstance(event_id, str) and re.fullmatch(EVENT_ID_PATTERN, event_id) else None,
        status="invalid",
        error=ErrorDetail(message=message, field=field),
    )


# --- dead letters ----------------------------------------------------------------------------------------------


class DeadLetterOut(BaseModel):
    event_id: str
    customer_id: str
    name: str
    workflow_id: str | None
    reason: Literal["signal_limit", "payload_too_large", "not_found", "rejected", "failing"]
    detail: str
    attempts: int
    occurred_at: datetime
    created_at: datetime
    updated_at: datetime


@router.get("/v1/events/dead-letters", dependencies=[READ], response_model=list[DeadLetterOut])
async def list_dead_letters(
    db: Annotated[asyncpg.Pool, Depends(pool)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    reason: Annotated[
        Literal["signal_limit", "payload_too_large", "not_found", "rejected", "failing"] | None, Query()
    ] = None,
) -> list[dict[str, Any]]:
    """Events a run refused for a reason of its own (``signal_limit``: it has received too many signals;
    ``payload_too_large``; ``not_found``; ``rejected``: another refusal; ``failing``: routing kept failing),
    newest first. They are out of the outbox: nobody else's events wait behind them."""
    return await event_store.dead_letters(db, limit=limit, reason=reason)


class RetryOut(BaseModel):
    event_id: str
    customer_id: str | None
    routed: bool
    """False: it failed again (a dead letter again, or in the outbox for the drainer)."""


@router.post("/v1/events/dead-letters/{event_id:path}/retry", dependencies=[WRITE], response_model=RetryOut)
async def retry_dead_letter(
    event_id: Annotated[str, Path(pattern=EVENT_ID_PATTERN)],
    router_: Annotated[EventRouter, Depends(event_router)],
) -> dict[str, Any]:
    """Put a dead letter back in the outbox and route it now."""
    outcome = await router_.retry_dead_letter(event_id)
    if outcome is None:
        raise ApiError(404, f"no dead letter '{event_id}'", field="event_id")
    return {"event_id": outcome.event_id, "customer_id": outcome.customer_id, "routed": outcome.routed}
