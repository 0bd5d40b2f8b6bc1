"""Suppressions by hand: list them, suppress an address (an operator's decision), lift one.

Bounces and complaints suppress addresses on their own (``routes_privacy``); these endpoints are for the
operator: a legal request to stop writing to an address, or lifting a suppression once the mailbox works again.
A manual suppression does not touch anybody's consent: lifting it lets the address receive again what its
customers consented to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.routes_deps import ADMIN, READ, WRITE, pool, read_model
from api.schemas import ApiError, StorableText, email_address, phone_number
from store import suppressions as store
from store.suppressions import Suppression

log = structlog.get_logger(__name__)

router = APIRouter(tags=["privacy"])
Pool = Annotated[asyncpg.Pool, Depends(pool)]
Channel = Literal["email", "sms"]


def _address(channel: str, address: str) -> str:
    """The normalised address, or 422 naming ``address`` when it cannot be one of ``channel``."""
    try:
        address = email_address(address) if channel == "email" else phone_number(address)
    except ValueError as exc:
        raise ApiError(422, f"address: {exc}", field="address") from None
    return store.normalize_address(channel, address)


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    address: Annotated[str, Field(min_length=1, max_length=320)]
    note: Annotated[StorableText, Field(max_length=500)] | None = Field(
        default=None, description="Why (kept in the row's detail)."
    )
    actor: Annotated[StorableText, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="Who decided; kept in the row's detail."
    )

    @model_validator(mode="after")
    def _check(self) -> SuppressionIn:
        try:
            _address(self.channel, self.address)
        except ApiError as exc:
            raise ValueError(exc.message) from None
        return self


class SuppressionOut(BaseModel):
    id: int
    channel: str
    address: str
    reason: str
    source: str
    detail: dict[str, Any]
    created_at: datetime


@router.get("/v1/suppressions", dependencies=[READ], response_model=list[SuppressionOut])
async def list_suppressions(
    db: Pool,
    channel: Channel | None = None,
    address: Annotated[str | None, Query(max_length=320)] = None,
    reason: Literal["hard_bounce", "complaint", "manual"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="``id`` of the last row of the page")] = None,
) -> list[Suppression]:
    """Suppressed addresses, newest first; ``address`` needs ``channel`` and finds it whatever its case."""
    if address is not None and channel is None:
        raise ApiError(422, "channel: give the channel of the address", field="channel")
    normalized = _address(channel, address) if address is not None and channel is not None else None
    return await store.list_suppressions(
        db, channel=channel, address=normalized, reason=reason, before=before, limit=limit
    )


@router.post(
    "/v1/suppressions",
    dependencies=[WRITE],
    response_model=SuppressionOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SuppressionIn.model_json_schema()}},
        }
    },
)
async def add_suppression(request: Request, response: Response, db: Pool) -> Suppression:
    """Suppress an address by hand (reason ``manual``): no message of any kind goes to it on that channel.
    ``201`` when new; ``200`` with the existing row when it was suppressed already (its reason is kept)."""
    body = await read_model(request, SuppressionIn)
    detail = {k: v for k, v in {"note": body.note, "actor": body.actor}.items() if v is not None}
    new, row = await store.add_manual(db, body.channel, body.address, detail=detail)
    response.status_code = 201 if new else 200
    log.info("suppression.added", channel=body.channel, id=row.id, new=new, actor=body.actor)
    return row


@router.delete("/v1/suppressions", dependencies=[ADMIN], response_model=SuppressionOut)
async def lift_suppression(
    db: Pool, channel: Channel, address: Annotated[str, Query(min_length=1, max_length=320)]
) -> Suppression:
    """Lift the suppression of an address, whatever its reason; answers the row removed. Consent withdrawn by
    a bounce or complaint stays withdrawn: the customer must grant it again."""
    row = await store.lift_suppression(db, channel, _address(channel, address))
    if row is None:
        raise ApiError(404, f"address: not suppressed on {channel}", field="address")
    log.info("suppression.lifted", channel=channel, id=row.id, reason=row.reason)
    return row
