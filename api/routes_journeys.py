"""Journeys: publish a version (JSON or YAML), list, show, pause and resume."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from api.router import EventRouter
from api.routes_deps import event_router, pool
from api.schemas import ApiError, JourneyDetail, JourneySummary, PublishResult
from journeys.validation import JourneyValidationError, parse_journey
from store import journeys as journey_store

router = APIRouter(tags=["journeys"])

JourneyPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="The journey id")]
Pool = Annotated[asyncpg.Pool, Depends(pool)]
Router = Annotated[EventRouter, Depends(event_router)]

_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
_PUBLISH_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "description": "A journey definition"}},
            "application/yaml": {"schema": {"type": "string", "description": "A journey definition in YAML"}},
        },
    }
}


@router.post(
    "/v1/journeys",
    status_code=201,
    response_model=PublishResult,
    openapi_extra=_PUBLISH_DOC,
    responses={200: {"model": PublishResult, "description": "Identical to the latest version: nothing published"}},
)
async def publish(request: Request, db: Pool, router_: Router) -> Any:
    """Publish a new immutable version. Invalid: 422 with every problem by step and field under ``issues``."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type in _YAML_TYPES:
        fmt = "yaml"
    elif content_type in ("application/json", "") or content_type.endswith("+json"):
        fmt = "json"
    else:
        raise ApiError(
            415,
            f"unsupported content type '{content_type}': send application/json or application/yaml",
            field="content-type",
        )
    raw = await request.body()
    try:
        journey = parse_journey(raw.decode("utf-8"), fmt=fmt)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8", field="body") from None
    except JourneyValidationError as exc:
        issues = [issue.model_dump() for issue in exc.issues]
        first = exc.issues[0]
        raise ApiError(
            422,
            f"invalid journey: {len(issues)} problem(s); first: {first}",
            field=first.location,
            issues=issues,
        ) from None
    version, created = await journey_store.publish(db, journey)
    await router_.refresh()
    row = await journey_store.get_journey(db, journey.id)
    body = PublishResult(id=journey.id, version=version, created=created, status=row["status"] if row else "active")
    return JSONResponse(body.model_dump(), status_code=201 if created else 200)


@router.get("/v1/journeys", response_model=list[JourneySummary])
async def list_journeys(db: Pool) -> list[dict[str, Any]]:
    return await journey_store.list_journeys(db)


@router.get("/v1/journeys/{journey_id}", response_model=JourneyDetail)
async def get_journey(journey_id: JourneyPath, db: Pool) -> dict[str, Any]:
    row = await journey_store.get_journey(db, journey_id)
    if row is None:
        raise ApiError(404, f"unknown journey '{journey_id}'", field="journey_id")
    return row


async def _set_status(journey_id: str, status: str, db: asyncpg.Pool, router_: EventRouter) -> dict[str, Any]:
    if not await journey_store.set_status(db, journey_id, status):  # type: ignore[arg-type]
        raise ApiError(404, f"unknown journey '{journey_id}'", field="journey_id")
    await router_.refresh()
    row = await journey_store.get_journey(db, journey_id)
    assert row is not None
    return row


@router.post("/v1/journeys/{journey_id}/pause", response_model=JourneySummary)
async def pause(journey_id: JourneyPath, db: Pool, router_: Router) -> dict[str, Any]:
    """No new entries; customers already in the journey carry on."""
    return await _set_status(journey_id, "paused", db, router_)


@router.post("/v1/journeys/{journey_id}/resume", response_model=JourneySummary)
async def resume(journey_id: JourneyPath, db: Pool, router_: Router) -> dict[str, Any]:
    return await _set_status(journey_id, "active", db, router_)
