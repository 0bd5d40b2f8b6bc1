"""Identity: ``POST /v1/identify`` links anonymous ids and aliases to a customer; the merge log per customer."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query, Request

from api.routes_deps import READ, WRITE, ResolvedCustomer, event_router, pool, read_model
from api.schemas import ApiError, CustomerOut, IdentifyIn, IdentifyOut, MergeOut
from orchestration.router import EventRouter
from store import customers as customer_store
from store import identity as identity_store

router = APIRouter(tags=["identity"])

Pool = Annotated[asyncpg.Pool, Depends(pool)]


@router.post(
    "/v1/identify",
    dependencies=[WRITE],
    response_model=IdentifyOut,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": IdentifyIn.model_json_schema()}}}
    },
    summary="Link anonymous ids and aliases to a customer",
)
async def identify(request: Request, db: Pool, router_: Annotated[EventRouter, Depends(event_router)]) -> IdentifyOut:
    """Link device or cookie ids (``anonymous_ids``), other profiles of the same person (``customer_ids``) and
    addresses (``aliases``) to ``customer_id``, creating the customer when new and setting ``traits``.

    The profiles behind them merge into the customer in one transaction (fields by the merge rules, events,
    messages, journey entries and consent carried over; see the README, "Identity"); later events under any of
    them resolve to the customer. Their running journeys are told: each carries on for the customer, or exits
    when the customer is already in that journey. Every link is recorded in the merge log
    (``GET /v1/customers/{id}/merges``). Repeating a call changes nothing; an alias that belongs to another
    customer is a ``409`` naming it, and nothing is written.
    """
    body = await read_model(request, IdentifyIn)
    links = [
        identity_store.Link("anonymous_id", value, f"anonymous_ids[{i}]") for i, value in enumerate(body.anonymous_ids)
    ]
    links += [
        identity_store.Link("customer_id", value, f"customer_ids[{i}]") for i, value in enumerate(body.customer_ids)
    ]
    links += [identity_store.Link(a.kind, a.value, f"aliases[{i}].value") for i, a in enumerate(body.aliases)]
    try:
        result = await identity_store.identify(
            db,
            body.customer_id,
            links,
            traits=body.traits.model_dump() if body.traits else None,
            explicit=body.explicit,
            source=body.source,
            actor=body.actor or "api",
        )
    except identity_store.IdentityConflictError as exc:
        raise ApiError(409, exc.message, field=exc.field) from None
    merges = await router_.notify_merges(result.merges)
    profile = await customer_store.get_customer(db, result.customer_id)
    return IdentifyOut(
        customer_id=result.customer_id,
        created=result.created,
        profile=CustomerOut.model_validate(profile, from_attributes=True),
        merges=[MergeOut.model_validate(m) for m in merges],
    )


@router.get("/v1/customers/{customer_id}/merges", dependencies=[READ], response_model=list[MergeOut])
async def merges(
    customer_id: ResolvedCustomer,
    db: Pool,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="``id`` of the last merge of the page")] = None,
) -> list[dict[str, Any]]:
    """The customer's merge log, newest first: what was linked and merged, who asked, from where, when."""
    if await customer_store.get_customer(db, customer_id) is None:
        raise ApiError(404, f"unknown customer '{customer_id}'", field="customer_id")
    return await identity_store.merges(db, customer_id, limit=limit, before=before)
