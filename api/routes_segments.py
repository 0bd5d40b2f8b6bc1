"""Named segments: ``PUT/GET/DELETE /v1/segments/{id}``, ``GET /v1/segments``, and an exact count with a sample.

Every exact count is kept (``store.segments.count_segment``); ``?max_age=`` answers the kept one when it was
counted for the current definition recently enough, so callers that can live with "exact a minute ago" do not
scan every customer each time.

A segment is profile conditions and event history, as in a journey's ``entry.segment``; broadcasts
(``segment: {ref}``) and journeys (``entry.segment.ref``) name one. A broadcast copies its audience when it starts,
so changing or deleting a segment never changes a broadcast already sending.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from api.openapi_links import from_path, linked, segment_links
from api.routes_deps import READ, WRITE, pool, read_model
from api.schemas import ApiError, SegmentCountOut
from journeys.models import Audience
from store import segments as segment_store
from store.segments import KEPT_SAMPLE, SegmentCount, SegmentRow

router = APIRouter(tags=["segments"])

SegmentPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="The segment id")]
Pool = Annotated[asyncpg.Pool, Depends(pool)]
MAX_SAMPLE = KEPT_SAMPLE  # a kept count answers its first members too
MAX_AGE = 31_536_000  # a year, in seconds


def _body(row: SegmentRow) -> dict[str, Any]:
    return {"id": row.id, **row.definition, "created_at": row.created_at, "updated_at": row.updated_at}


@router.put(
    "/v1/segments/{segment_id}",
    status_code=200,
    dependencies=[WRITE],
    responses=linked(200, 201, **segment_links(from_path("segment_id"))),
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": Audience.model_json_schema()}}}
    },
)
async def put_segment(segment_id: SegmentPath, request: Request, response: Response, db: Pool) -> dict[str, Any]:
    """Create or replace: ``{"where": [...], "events": [...]}`` (``201`` when new)."""
    audience = await read_model(request, Audience)
    row, created = await segment_store.put_segment(db, segment_id, audience)
    response.status_code = 201 if created else 200
    return _body(row)


@router.get("/v1/segments", dependencies=[READ])
async def list_segments(db: Pool) -> list[dict[str, Any]]:
    return [_body(row) for row in await segment_store.list_segments(db)]


async def _segment(db: asyncpg.Pool, segment_id: str) -> SegmentRow:
    row = await segment_store.get_segment(db, segment_id)
    if row is None:
        raise ApiError(404, f"unknown segment '{segment_id}'", field="segment_id")
    return row


@router.get(
    "/v1/segments/{segment_id}", dependencies=[READ], responses=linked(200, **segment_links(from_path("segment_id")))
)
async def get_segment(segment_id: SegmentPath, db: Pool) -> dict[str, Any]:
    return _body(await _segment(db, segment_id))


@router.delete(
    "/v1/segments/{segment_id}",
    status_code=204,
    dependencies=[WRITE],
    responses={409: {"description": "A journey not archived, or a broadcast not finished, uses the segment"}},
)
async def delete_segment(segment_id: SegmentPath, db: Pool) -> Response:
    """Delete the segment, unless a journey (not archived) enters by it or a broadcast scheduled, sending or paused
    sends to it: then ``409`` naming them under ``used_by``."""
    found, users = await segment_store.delete_unused_segment(db, segment_id)
    if not found:
        raise ApiError(404, f"unknown segment '{segment_id}'", field="segment_id")
    if users:
        names = ", ".join(f"{kind} '{id_}'" for kind, id_ in users)
        raise ApiError(
            409,
            f"segment '{segment_id}' is in use by {names}",
            field="segment_id",
            used_by=[{"kind": kind, "id": id_} for kind, id_ in users],
        )
    return Response(status_code=204)


@router.get("/v1/segments/{segment_id}/count", dependencies=[READ], response_model=SegmentCountOut)
async def count_segment(
    segment_id: SegmentPath,
    db: Pool,
    sample: Annotated[int, Query(ge=0, le=MAX_SAMPLE, description="How many member ids to return")] = 10,
    max_age: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_AGE,
            description="Seconds. When given, the last exact count of this segment's current definition is answered "
            "instead of counting again if it is at most this old (`stored: true`; `exact_as_of` says when it was "
            "exact). Without it, or with no such count, the segment is counted now.",
        ),
    ] = None,
) -> SegmentCountOut:
    """The exact number of members now, how long counting took, and the first ``sample`` members by id. Every count
    is kept; with ``max_age`` a kept count of the current definition that is recent enough is answered at once."""
    row = await _segment(db, segment_id)
    if max_age is not None:
        kept = await segment_store.stored_count(db, row)
        now = datetime.now(UTC)
        if kept is not None and kept.age_seconds(now) <= max_age:
            return _count_body(kept, sample, stored=True, now=now)
    counted = await segment_store.count_segment(db, row)
    return _count_body(counted, sample, stored=False, now=datetime.now(UTC))


def _count_body(count: SegmentCount, sample: int, *, stored: bool, now: datetime) -> SegmentCountOut:
    return SegmentCountOut(
        id=count.segment_id, count=count.members, exact_as_of=count.exact_as_of, counted_at=count.counted_at,
        age_seconds=round(count.age_seconds(now), 3), stored=stored, milliseconds=count.milliseconds,
        sample=count.sample[:sample],
    )  # fmt: skip
