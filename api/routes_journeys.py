"""Journeys: publish a version (JSON or YAML), list, show, pause, resume and archive.

A journey with ``entry.segment`` has a Temporal Schedule (``orchestration/schedules.py``) kept in step with it here.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, NoReturn

import asyncpg
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from temporalio.client import Client

from api.openapi_links import BODY_ID, from_path, journey_links, linked
from api.publishing import publish_journey, validated
from api.routes_deps import ADMIN, READ, WRITE, event_router, input_limits, off_loop, pool, settings, temporal
from api.schemas import ApiError, JourneyDetail, JourneySummary, PublishResult
from config.settings import Settings
from journeys.models import Journey
from journeys.validation import JourneyValidationError
from orchestration import schedules
from orchestration.exits import exit_journey, record_terminations
from orchestration.router import EventRouter
from store import journeys as journey_store
from store.journeys import JourneyRow

router = APIRouter(tags=["journeys"])

JourneyPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="The journey id")]
Pool = Annotated[asyncpg.Pool, Depends(pool)]
Router = Annotated[EventRouter, Depends(event_router)]
Temporal = Annotated[Client, Depends(temporal)]
AppSettings = Annotated[Settings, Depends(settings)]

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
    dependencies=[WRITE],
    status_code=201,
    response_model=PublishResult,
    openapi_extra=_PUBLISH_DOC,
    responses={
        200: {
            "model": PublishResult,
            "description": "Identical to the latest version: nothing published",
            "links": journey_links(BODY_ID),
        },
        201: {"description": "Published", "links": journey_links(BODY_ID)},
    },
)
async def publish(request: Request, db: Pool, router_: Router, client: Temporal, config: AppSettings) -> Any:
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
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8", field="body") from None
    try:
        # Parsing, the limits and the Liquid checks are CPU work: in a validation process, not on the event loop.
        journey = await off_loop(request, validated, text, fmt, input_limits(request), config.sms_max_segments)
    except JourneyValidationError as exc:
        _invalid(exc)
    try:
        version, created = await publish_journey(db, journey, client=client, settings=config, router=router_)
    except JourneyValidationError as exc:  # a reference to something that does not exist (a segment)
        _invalid(exc)
    row = await journey_store.get_journey(db, journey.id)
    body = PublishResult(id=journey.id, version=version, created=created, status=row.status if row else "active")
    return JSONResponse(body.model_dump(), status_code=201 if created else 200)


def _invalid(exc: JourneyValidationError) -> NoReturn:
    issues = [issue.model_dump() for issue in exc.issues]
    first = exc.issues[0]
    raise ApiError(
        422, f"invalid journey: {len(issues)} problem(s); first: {first}", field=first.location, issues=issues
    ) from None


async def _sync_schedule(client: Client, config: Settings, row: JourneyRow | None) -> None:
    """Create, update, pause or delete the journey's segment schedule to match its latest version and status."""
    if row is None:
        return
    journey = Journey.model_validate(row.definition)
    await schedules.sync_schedule(client, config, journey, row.latest_version, row.status)


@router.get("/v1/journeys", dependencies=[READ], response_model=list[JourneySummary])
async def list_journeys(db: Pool) -> list[JourneyRow]:
    return await journey_store.list_journeys(db)


@router.get(
    "/v1/journeys/{journey_id}",
    dependencies=[READ],
    response_model=JourneyDetail,
    responses=linked(200, **journey_links(from_path("journey_id"))),
)
async def get_journey(journey_id: JourneyPath, db: Pool) -> JourneyRow:
    row = await journey_store.get_journey(db, journey_id)
    if row is None:
        raise ApiError(404, f"unknown journey '{journey_id}'", field="journey_id")
    return row


async def _set_status(journey_id: str, status: str, db: asyncpg.Pool, router_: EventRouter) -> JourneyRow:
    if not await journey_store.set_status(db, journey_id, status):  # type: ignore[arg-type]
        raise ApiError(404, f"unknown journey '{journey_id}'", field="journey_id")
    await router_.refresh()
    row = await journey_store.get_journey(db, journey_id)
    assert row is not None
    return row


@router.post(
    "/v1/journeys/{journey_id}/pause",
    dependencies=[WRITE],
    response_model=JourneySummary,
    responses=linked(200, **journey_links(from_path("journey_id"))),
)
async def pause(
    journey_id: JourneyPath, db: Pool, router_: Router, client: Temporal, config: AppSettings
) -> JourneyRow:
    """No new entries (triggers or segment schedule); customers already in the journey carry on."""
    row = await _set_status(journey_id, "paused", db, router_)
    await _sync_schedule(client, config, row)
    return row


@router.post(
    "/v1/journeys/{journey_id}/resume",
    dependencies=[WRITE],
    response_model=JourneySummary,
    responses=linked(200, **journey_links(from_path("journey_id"))),
)
async def resume(
    journey_id: JourneyPath, db: Pool, router_: Router, client: Temporal, config: AppSettings
) -> JourneyRow:
    row = await _set_status(journey_id, "active", db, router_)
    await _sync_schedule(client, config, row)
    return row


class ArchiveResult(JourneySummary):
    exited: int
    """Running customers asked to leave (each records ``$exit`` with reason ``archived`` and ends ``exited``)."""
    terminated: int = 0
    """Runs that refused to leave or had not closed in time, terminated as a last resort (each logged in the
    operators' log, action ``terminate``, with why)."""
    complete: bool
    """False: runs were still being found when the time ran out; archive again to finish."""
    schedule: str
    """What happened to the segment schedule: ``deleted`` or ``none``."""


@router.post("/v1/journeys/{journey_id}/archive", dependencies=[ADMIN], response_model=ArchiveResult)
async def archive(journey_id: JourneyPath, db: Pool, router_: Router, client: Temporal) -> dict[str, Any]:
    """No more entries; the segment schedule is deleted; running customers leave at once (``$exit``, reason
    ``archived``; status ``exited``); a run that refuses or has not closed in time is terminated. Archiving again
    reaches any run a previous call missed."""
    row = await _set_status(journey_id, "archived", db, router_)
    schedule = await schedules.delete_schedule(client, journey_id)
    report = await exit_journey(client, journey_id, "archived")
    await record_terminations(db, report, actor="archive", reason="archived")
    return {
        **asdict(row),
        "exited": len(report.exited),
        "terminated": len(report.terminated),
        "complete": report.complete,
        "schedule": schedule,
    }
