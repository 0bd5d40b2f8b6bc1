"""Customers: profile, consent, their journeys (from Temporal visibility) and their in-app inbox."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request
from temporalio.client import Client, WorkflowExecutionStatus

from api.openapi_links import customer_links, from_path, linked, to
from api.routes_deps import READ, WRITE, ResolvedCustomer, pool, read_model, temporal
from api.schemas import (
    ApiError,
    ConsentIn,
    ConsentOut,
    CustomerIn,
    CustomerJourney,
    CustomerOut,
    InboxMessage,
)
from orchestration import visibility
from store import customers as customer_store
from store import inbox as inbox_store
from store.customers import Customer
from store.inbox import InboxItem

router = APIRouter(tags=["customers"])

Pool = Annotated[asyncpg.Pool, Depends(pool)]

_STATUS = {
    WorkflowExecutionStatus.RUNNING: "running",
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "canceled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued_as_new",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}


def _doc(model: Any) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


_CUSTOMER_LINKS = {
    **customer_links(from_path("customer_id")),
    "PutDevice": to("/v1/customers/{customer_id}/devices/{device_id}", "put", customer_id=from_path("customer_id")),
}


@router.put(
    "/v1/customers/{customer_id}",
    dependencies=[WRITE],
    response_model=CustomerOut,
    openapi_extra=_doc(CustomerIn),
    responses=linked(200, **_CUSTOMER_LINKS),
)
async def put_customer(customer_id: ResolvedCustomer, request: Request, db: Pool) -> Customer:
    """Create or update a profile. Fields left out keep their value; ``attributes`` are merged key by key."""
    body: CustomerIn = await read_model(request, CustomerIn)
    return await customer_store.upsert_customer(db, customer_id, **body.model_dump())


@router.get(
    "/v1/customers/{customer_id}",
    dependencies=[READ],
    response_model=CustomerOut,
    responses=linked(200, **_CUSTOMER_LINKS),
)
async def get_customer(customer_id: ResolvedCustomer, db: Pool) -> Customer:
    row = await customer_store.get_customer(db, customer_id)
    if row is None:
        raise ApiError(404, f"unknown customer '{customer_id}'", field="customer_id")
    return row


@router.get("/v1/customers/{customer_id}/consent", dependencies=[READ], response_model=ConsentOut)
async def get_consent(customer_id: ResolvedCustomer, db: Pool) -> dict[str, Any]:
    if await customer_store.get_customer(db, customer_id) is None:
        raise ApiError(404, f"unknown customer '{customer_id}'", field="customer_id")
    return await customer_store.current_consent(db, customer_id)


@router.put(
    "/v1/customers/{customer_id}/consent",
    dependencies=[WRITE],
    response_model=ConsentOut,
    openapi_extra=_doc(ConsentIn),
    responses=linked(
        200,
        GetConsent=_CUSTOMER_LINKS["GetConsent"],
        ConsentHistory=_CUSTOMER_LINKS["ConsentHistory"],
        Export=_CUSTOMER_LINKS["Export"],
    ),
)
async def put_consent(customer_id: ResolvedCustomer, request: Request, db: Pool) -> dict[str, Any]:
    """Record consent changes (appended to the ledger) and answer the current state."""
    body: ConsentIn = await read_model(request, ConsentIn)
    changes: list[Any] = [("channel", name, status) for name, status in body.channels.items()]
    changes += [("topic", name, status) for name, status in body.topics.items()]
    try:
        await customer_store.record_consents(
            db, customer_id, changes, source=body.source, lawful_basis=body.lawful_basis
        )
    except customer_store.UnknownCustomerError as exc:
        raise ApiError(404, str(exc), field="customer_id") from None
    return await customer_store.current_consent(db, customer_id)


@router.get("/v1/customers/{customer_id}/journeys", dependencies=[READ], response_model=list[CustomerJourney])
async def customer_journeys(
    customer_id: ResolvedCustomer,
    client: Annotated[Client, Depends(temporal)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CustomerJourney]:
    """The customer's journey runs, newest first, from Temporal visibility (eventually consistent)."""
    return [
        CustomerJourney(
            workflow_id=run.workflow_id,
            run_id=run.run_id,
            journey_id=run.journey_id,
            journey_name=run.journey_name,
            version=run.version,
            step=run.step,
            status=_STATUS.get(run.status) if run.status else None,
            started_at=run.started_at,
            closed_at=run.closed_at,
        )
        for run in await visibility.list_runs(client, customer_id=customer_id, limit=limit)
    ]


@router.get("/v1/customers/{customer_id}/inbox", dependencies=[READ], response_model=list[InboxMessage])
async def inbox(
    customer_id: ResolvedCustomer,
    db: Pool,
    unread: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[InboxItem]:
    """In-app messages, newest first (``unread=true``: only those not marked read)."""
    return await inbox_store.messages_of(db, customer_id, unread=unread, limit=limit)


@router.post("/v1/customers/{customer_id}/inbox/{message_id}/read", dependencies=[WRITE], response_model=InboxMessage)
async def mark_read(
    customer_id: ResolvedCustomer, message_id: Annotated[int, Path(ge=1, le=2**63 - 1)], db: Pool
) -> InboxItem:
    """Mark one in-app message read (again: keeps the first read time)."""
    item = await inbox_store.mark_read(db, customer_id, message_id)
    if item is None:
        raise ApiError(404, f"no inbox message {message_id} for customer '{customer_id}'", field="message_id")
    return item
