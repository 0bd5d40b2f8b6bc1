"""Preview and test-send a journey's send step for a customer: ``POST /v1/journeys/{id}/preview`` and
``.../test-send`` (see ``api/previews.py``)."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from api import previews
from api.routes_deps import READ, WRITE, pool, presented_key, read_json, read_model, settings
from api.routes_devices import DeviceAddress
from api.schemas import ApiError, CustomerId, EventName
from config.settings import Settings
from journeys.models import Journey
from store import journeys as journey_store

router = APIRouter(tags=["journeys"])

JourneyPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="The journey id")]
Pool = Annotated[asyncpg.Pool, Depends(pool)]
AppSettings = Annotated[Settings, Depends(settings)]


class TriggerBody(BaseModel):
    name: EventName | None = None
    """Default: the journey's trigger event."""
    properties: dict[str, Any] = Field(default_factory=dict)


class PreviewBody(BaseModel):
    step: str
    customer_id: CustomerId
    event: TriggerBody | None = None
    """The trigger event the templates see as ``event.*`` (default: the journey's trigger, no properties)."""
    version: int | None = None
    """Default: the latest version."""


TO_DOC = "The email address, phone number or webhook URL that receives the test (not for a push to a device)."
DEVICE_DOC = (
    'Push: the device that receives the test, as a device is registered: `{"platform": "fcm" or "apns", "token": '
    '...}` or `{"platform": "web", "subscription": {"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}}`. Sent '
    "once over the platform's provider as a real push is; the customer's own devices get nothing, and no stored "
    "device changes whatever the provider answers. Required for push with the `devices` push adapter."
)
CHANNEL_DOC = "Which of the message's channels (default: its first)."


class TestSendBody(PreviewBody):
    to: str | None = Field(default=None, description=TO_DOC)
    device: DeviceAddress | None = Field(default=None, description=DEVICE_DOC)
    channel: str | None = Field(default=None, description=CHANNEL_DOC)


M = TypeVar("M", bound=BaseModel)


async def read_test_send(request: Request, model: type[M]) -> M:
    """A test send's body: ``read_model``, with a wrong ``device`` named down to its field (``device.token``)."""
    data = await read_json(request)
    if isinstance(data, dict) and data.get("device") is not None:
        previews.parse_device(data["device"])
    return await read_model(request, model)


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def _request(db: asyncpg.Pool, journey_id: str, body: PreviewBody) -> Any:
    journey: Journey | None
    if body.version is not None:
        journey, version = await journey_store.get_version(db, journey_id, body.version), body.version
    else:
        row = await journey_store.get_journey(db, journey_id)
        journey = Journey.model_validate(row.definition) if row and row.definition else None
        version = row.latest_version if row else 0
    if journey is None:
        which = f"unknown journey '{journey_id}'" + (f" version {body.version}" if body.version else "")
        raise ApiError(404, which, field="journey_id")
    given = body.event or TriggerBody()
    return await previews.step_request(db, journey, version, body.step, body.customer_id, given.name, given.properties)


@router.post("/v1/journeys/{journey_id}/preview", response_model=previews.Preview, dependencies=[READ])
async def preview(journey_id: JourneyPath, request: Request, db: Pool, config: AppSettings) -> previews.Preview:
    """What the customer would receive from this send step on each channel, and the send policy's decision."""
    body = await read_model(request, PreviewBody)
    return await previews.preview(db, config, await _request(db, journey_id, body))


@router.post(
    "/v1/journeys/{journey_id}/test-send",
    response_model=previews.TestSendResult,
    dependencies=[WRITE],
    openapi_extra=body_doc(TestSendBody),
)
async def test_send(
    journey_id: JourneyPath, request: Request, db: Pool, config: AppSettings
) -> previews.TestSendResult:
    """Send this step's message, rendered for the customer, to ``to``, or for push to ``device``: marked as a test
    (``[TEST]`` in the subject, title or text), counted nowhere (no message row, cap, report or device change) and
    never held back by consent, caps or quiet hours. ``status`` is ``sent`` with the provider's message id, or
    ``failed`` with its error (a push: e.g. ``UNREGISTERED``). A device whose platform is not configured here is a
    422 naming ``device.platform`` and the settings it needs."""
    body = await read_test_send(request, TestSendBody)
    send = await _request(db, journey_id, body)
    return await previews.test_send_checked(
        db, config, send, body.channel, body.to, body.device, sender=previews.key_sender(presented_key(request))
    )
