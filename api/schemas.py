"""Request and response bodies of the HTTP API, and its error shape ``{"error": {"message", "field"}}``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from journeys.runtime import Event
from journeys.validation import find_nul

# Workflow ids are "{journey}:{customer}" and visibility queries quote the customer id: keep both unambiguous.
CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+:=-]{0,199}$"
EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+:=/-]{0,199}$"
EVENT_NAME_PATTERN = r"^[^\x00-\x1f\x7f\"\\]{1,200}$"

CustomerId = Annotated[str, Field(pattern=CUSTOMER_ID_PATTERN, description="1-200 of A-Z a-z 0-9 . _ @ + : = -")]
EventName = Annotated[str, Field(pattern=EVENT_NAME_PATTERN, description="1-200 printable characters")]


class ApiError(Exception):
    """An error answered as ``{"error": {"message": ..., "field": ...}}`` with ``status``."""

    def __init__(self, status: int, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "field": self.field, **self.extra}}


class ErrorDetail(BaseModel):
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# --- events ------------------------------------------------------------------------------------------------


def _storable(value: Any) -> Any:
    """Refuse what PostgreSQL cannot store: a NUL character in text, or in any key or string of JSON."""
    nul = find_nul(value)
    if nul:
        where = "the text" if nul == "(value)" else f"'{nul}'"
        raise ValueError(f"{where} contains a NUL character, which cannot be stored")
    return value


StorableText = Annotated[str, AfterValidator(_storable)]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(
        default=None, pattern=EVENT_ID_PATTERN, description="Idempotency key; generated when absent."
    )
    customer_id: CustomerId
    name: EventName
    properties: Annotated[dict[str, Any], AfterValidator(_storable)] = Field(default_factory=dict)
    occurred_at: datetime | None = Field(default=None, description="Defaults to the time the API received it.")

    def to_event(self) -> Event:
        occurred = self.occurred_at or datetime.now(UTC)
        if occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=UTC)
        return Event(
            event_id=self.event_id or str(uuid.uuid4()),
            customer_id=self.customer_id,
            name=self.name,
            properties=self.properties,
            occurred_at=occurred,
        )


class EventBatchIn(BaseModel):
    events: list[EventIn]


class EventResult(BaseModel):
    index: int
    event_id: str | None
    status: Literal["accepted", "duplicate", "invalid"]
    routed: bool | None = None
    """Accepted events: False when routing waits for Temporal (it is retried, never dropped)."""
    error: ErrorDetail | None = None


class EventsResponse(BaseModel):
    accepted: int
    duplicates: int
    invalid: int
    results: list[EventResult]


# --- customers ---------------------------------------------------------------------------------------------


def _timezone(value: str | None) -> str | None:
    if value is not None:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}' (use an IANA name like Europe/Paris)") from None
    return value


def _email(value: str | None) -> str | None:
    if value is not None and (value.count("@") != 1 or value.startswith("@") or value.endswith("@")):
        raise ValueError("not an email address")
    return value


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, Field(max_length=320), AfterValidator(_email)] | None = None
    phone: Annotated[str | None, Field(pattern=r"^\+?[0-9 ().-]{3,32}$")] = None
    timezone: Annotated[str | None, AfterValidator(_timezone)] = None
    locale: Annotated[str | None, Field(pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")] = None
    attributes: Annotated[dict[str, Any], AfterValidator(_storable)] | None = Field(
        default=None, description="Merged into the stored attributes."
    )


class CustomerOut(BaseModel):
    id: str
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


ConsentValue = Literal["granted", "withdrawn"]
ConsentName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: dict[ConsentName, ConsentValue] = Field(default_factory=dict)
    topics: dict[ConsentName, ConsentValue] = Field(default_factory=dict)
    source: str = Field(default="api", max_length=100)
    lawful_basis: str | None = Field(default=None, max_length=100)


class ConsentOut(BaseModel):
    channels: dict[str, str]
    topics: dict[str, str]


# --- journeys ----------------------------------------------------------------------------------------------


class JourneySummary(BaseModel):
    id: str
    name: str
    status: str
    latest_version: int
    trigger_event: str
    created_at: datetime
    updated_at: datetime
    published_at: datetime


class JourneyDetail(JourneySummary):
    definition: dict[str, Any]


class PublishResult(BaseModel):
    id: str
    version: int
    created: bool
    """False: the definition is identical to the latest version, nothing was published."""
    status: str


class CustomerJourney(BaseModel):
    workflow_id: str
    run_id: str | None
    journey_id: str | None
    journey_name: str | None
    version: int | None
    step: str | None
    status: str | None
    started_at: datetime | None
    closed_at: datetime | None


class InboxMessage(BaseModel):
    id: int
    title: str | None
    body: str
    data: dict[str, Any]
    created_at: datetime
    read_at: datetime | None
