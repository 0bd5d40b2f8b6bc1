"""Broadcasts: create (and start), list, show with progress and report, pause, resume, cancel; preview and test
sends of a broadcast's message. See ``api/broadcasting.py`` and ``workflows/broadcast.py``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field, ValidationError, model_validator
from temporalio.client import Client
from temporalio.service import RPCError

from api import previews
from api.broadcasting import create_and_start, describe
from api.openapi_links import BODY_ID, broadcast_links, from_path, linked
from api.routes_deps import (
    READ,
    WRITE,
    pool,
    presented_key,
    read_json,
    read_model,
    settings,
    temporal,
    validation_field,
)
from api.routes_devices import DeviceAddress
from api.routes_previews import CHANNEL_DOC, DEVICE_DOC, TO_DOC, body_doc, read_test_send
from api.schemas import ApiError, CustomerId
from config.settings import Settings
from journeys.broadcasts import Broadcast
from orchestration.broadcasts import control
from store import broadcasts as broadcast_store
from store import customers as customer_store

router = APIRouter(tags=["broadcasts"])

BroadcastPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="The broadcast id")]
Pool = Annotated[asyncpg.Pool, Depends(pool)]
Temporal = Annotated[Client, Depends(temporal)]
AppSettings = Annotated[Settings, Depends(settings)]


def parse_broadcast(data: Any) -> Broadcast:
    """A broadcast definition (``id`` generated when absent); 422 naming the first wrong field."""
    if not isinstance(data, dict):
        raise ApiError(422, "the broadcast must be a JSON object", field="body")
    data = {"id": f"b-{uuid.uuid4().hex[:12]}", **data}
    try:
        return Broadcast.model_validate(data)
    except ValidationError as exc:
        message, field = validation_field(exc.errors())  # type: ignore[arg-type]
        raise ApiError(422, message, field=field) from None


@router.post("/v1/broadcasts", status_code=201, dependencies=[WRITE], responses=linked(201, **broadcast_links(BODY_ID)))
async def create(request: Request, db: Pool, client: Temporal, config: AppSettings) -> dict[str, Any]:
    """Create a broadcast and start it: the audience is frozen at its start, then sent in batches."""
    broadcast = parse_broadcast(await read_json(request))
    return await create_and_start(db, client, config, broadcast)


@router.get("/v1/broadcasts", dependencies=[READ])
async def list_broadcasts(db: Pool) -> list[dict[str, Any]]:
    rows = await broadcast_store.list_broadcasts(db)
    return [{"id": r.id, "status": r.status, "audience": r.audience, "created_at": r.created_at} for r in rows]


class PreviewBody(BaseModel):
    broadcast: dict[str, Any] | None = None
    """A broadcast definition to preview; or ``broadcast_id`` of one created already."""
    broadcast_id: str | None = None
    customer_id: CustomerId

    @model_validator(mode="after")
    def _one(self) -> PreviewBody:
        if (self.broadcast is None) == (self.broadcast_id is None):
            raise ValueError("broadcast: give either 'broadcast' (a definition) or 'broadcast_id'")
        return self


class TestSendBody(PreviewBody):
    to: str | None = Field(default=None, description=TO_DOC)
    device: DeviceAddress | None = Field(default=None, description=DEVICE_DOC)
    channel: str | None = Field(default=None, description=CHANNEL_DOC)


async def _preview_request(db: asyncpg.Pool, body: PreviewBody) -> Any:
    if body.broadcast_id is not None:
        row = await broadcast_store.get_broadcast(db, body.broadcast_id)
        if row is None:
            raise ApiError(404, f"unknown broadcast '{body.broadcast_id}'", field="broadcast_id")
        broadcast = row.broadcast()
    else:
        broadcast = parse_broadcast(body.broadcast)
    if await customer_store.get_customer(db, body.customer_id) is None:
        raise ApiError(404, f"unknown customer '{body.customer_id}'", field="customer_id")
    return previews.broadcast_request(broadcast, body.customer_id, datetime.now(UTC))


@router.post("/v1/broadcasts/preview", response_model=previews.Preview, dependencies=[READ])
async def preview(request: Request, db: Pool, config: AppSettings) -> previews.Preview:
    """What the customer would receive on each channel and what the send policy would decide; writes nothing."""
    body = await read_model(request, PreviewBody)
    return await previews.preview(db, config, await _preview_request(db, body))


@router.post(
    "/v1/broadcasts/test-send",
    response_model=previews.TestSendResult,
    dependencies=[WRITE],
    openapi_extra=body_doc(TestSendBody),
)
async def test_send(request: Request, db: Pool, config: AppSettings) -> previews.TestSendResult:
    """Send the message as the customer would get it to ``to``, or for push to ``device``: marked as a test,
    counted nowhere, never held back by consent or caps; ``status`` ``sent`` with the provider's message id or
    ``failed`` with its error. A device whose platform is not configured is a 422 naming ``device.platform``."""
    body = await read_test_send(request, TestSendBody)
    send = await _preview_request(db, body)
    return await previews.test_send_checked(
        db, config, send, body.channel, body.to, body.device, sender=previews.key_sender(presented_key(request))
    )


@router.get(
    "/v1/broadcasts/{broadcast_id}",
    dependencies=[READ],
    responses=linked(200, **broadcast_links(from_path("broadcast_id"))),
)
async def show(broadcast_id: BroadcastPath, db: Pool) -> dict[str, Any]:
    return await describe(db, broadcast_id)


async def _control(db: asyncpg.Pool, client: Client, broadcast_id: str, action: str) -> dict[str, Any]:
    try:
        status = await control(db, client, broadcast_id, action)
    except RPCError as exc:
        # The status is written (batches stop on it); the run is told when this is asked again.
        raise ApiError(503, f"Temporal is unavailable, retry later ({exc.message})", field=None) from None
    if status is None:
        raise ApiError(404, f"unknown broadcast '{broadcast_id}'", field="broadcast_id")
    return await describe(db, broadcast_id)


@router.post("/v1/broadcasts/{broadcast_id}/pause", dependencies=[WRITE])
async def pause(broadcast_id: BroadcastPath, db: Pool, client: Temporal) -> dict[str, Any]:
    """Stop sending (within the batch under way); the rest stays pending until resumed."""
    return await _control(db, client, broadcast_id, "pause")


@router.post("/v1/broadcasts/{broadcast_id}/resume", dependencies=[WRITE])
async def resume(broadcast_id: BroadcastPath, db: Pool, client: Temporal) -> dict[str, Any]:
    return await _control(db, client, broadcast_id, "resume")


@router.post("/v1/broadcasts/{broadcast_id}/cancel", dependencies=[WRITE])
async def cancel(broadcast_id: BroadcastPath, db: Pool, client: Temporal) -> dict[str, Any]:
    """Stop for good: pending recipients become ``cancelled``."""
    return await _control(db, client, broadcast_id, "cancel")
