"""Operators on one journey run: take a customer out of a journey, with a reason (logged in ``ops_actions``)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field
from temporalio.client import Client

from api.routes_deps import WRITE, ResolvedCustomer, pool, read_model, temporal
from api.schemas import ApiError
from orchestration.ops import exit_customer_run
from store import ops as ops_store

router = APIRouter(tags=["journeys"])

JourneyPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="The journey id")]


class ExitBody(BaseModel):
    reason: str = Field(min_length=1, max_length=200, description="Why: recorded as the run's exit reason")
    actor: str = Field(default="api", min_length=1, max_length=100, description="Who asked (for the log)")


class ExitAnswer(BaseModel):
    journey_id: str
    customer_id: str
    reason: str
    workflow_ids: list[str]
    """The runs asked to exit: each records ``$exit`` with the reason and ends with status ``exited``."""


@router.post(
    "/v1/journeys/{journey_id}/runs/{customer_id}/exit",
    dependencies=[WRITE],
    status_code=202,
    response_model=ExitAnswer,
)
async def exit_run(
    request: Request,
    journey_id: JourneyPath,
    customer_id: ResolvedCustomer,
    db: Annotated[asyncpg.Pool, Depends(pool)],
    client: Annotated[Client, Depends(temporal)],
) -> ExitAnswer:
    """Take the customer out of the journey now (a send under way finishes first). 404 when they are not in it."""
    body = await read_model(request, ExitBody)
    asked = await exit_customer_run(client, journey_id, customer_id, body.reason)
    if not asked:
        raise ApiError(404, f"customer '{customer_id}' is not in journey '{journey_id}' now", field="customer_id")
    await ops_store.record_action(
        db, "exit", body.actor, body.reason, asked[0], {"journey_id": journey_id, "customer_id": customer_id}
    )
    return ExitAnswer(journey_id=journey_id, customer_id=customer_id, reason=body.reason, workflow_ids=asked)
