"""Request and response bodies of the HTTP API, and its error shape ``{"error": {"message", "field"}}``."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from contracts.journey import Event
from journeys.validation import find_nul
from store.identity import ANON_PREFIX, alias_of, anonymous_profile

# Workflow ids are "{journey}:{customer}" and visibility queries quote the customer id: keep both unambiguous.
CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+:=-]{0,199}$"
EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+:=/-]{0,199}$"
# An anonymous visitor's profile id is "anon:{anonymous id}", itself a customer id.
ANONYMOUS_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+:=-]{0,189}$"
PHONE_PATTERN = r"^\+?[0-9 ().-]{3,32}$"
EVENT_NAME_PATTERN = r"^[^\x00-\x1f\x7f\"\\]{1,200}$"

CustomerId = Annotated[str, Field(pattern=CUSTOMER_ID_PATTERN, description="1-200 of A-Z a-z 0-9 . _ @ + : = -")]
EventName = Annotated[str, Field(pattern=EVENT_NAME_PATTERN, description="1-200 printable characters")]
AnonymousId = Annotated[
    str, Field(pattern=ANONYMOUS_ID_PATTERN, description="A device or cookie id: 1-190 of A-Z a-z 0-9 . _ @ + : = -")
]


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


def is_email(value: str) -> bool:
    """The shape check every email field of the API uses: one ``@`` with something on each side."""
    return value.count("@") == 1 and not value.startswith("@") and not value.endswith("@")


def _email(value: str | None) -> str | None:
    if value is not None and not is_email(value):
        raise ValueError("not an email address")
    return value


class AliasIn(BaseModel):
    """An address linked to a customer by ``POST /v1/identify``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["email", "phone"]
    value: Annotated[str, Field(min_length=1, max_length=320)]

    @model_validator(mode="after")
    def _check(self) -> AliasIn:
        if self.kind == "email":
            _email(self.value)
        elif not re.fullmatch(PHONE_PATTERN, self.value):
            raise ValueError("not a phone number")
        return self


class EventIn(BaseModel):
    """One behaviour event. Its customer: ``customer_id``, else ``alias`` (a linked email or phone), else
    ``anonymous_id`` (a visitor not identified yet, whose profile is ``anon:{anonymous_id}``)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(
        default=None, pattern=EVENT_ID_PATTERN, description="Idempotency key; generated when absent."
    )
    customer_id: CustomerId | None = Field(default=None, description="The customer, or a profile merged into one.")
    anonymous_id: AnonymousId | None = Field(default=None, description="The device or cookie id.")
    alias: AliasIn | None = Field(default=None, description="An email or phone linked by identify.")
    name: EventName
    properties: Annotated[dict[str, Any], AfterValidator(_storable)] = Field(default_factory=dict)
    occurred_at: datetime | None = Field(default=None, description="Defaults to the time the API received it.")

    @model_validator(mode="after")
    def _identified(self) -> EventIn:
        if self.customer_id is None and self.anonymous_id is None and self.alias is None:
            raise ValueError("customer_id: send customer_id, anonymous_id or alias to say whose event it is")
        return self

    def identity(self) -> tuple[str, str, str | None]:
        """The alias the event names its customer by, and the profile id when nobody is linked to it."""
        if self.customer_id is not None:
            return (*alias_of(self.customer_id), self.customer_id)
        if self.alias is not None:
            return self.alias.kind, self.alias.value, None
        assert self.anonymous_id is not None
        return "anonymous_id", self.anonymous_id, anonymous_profile(self.anonymous_id)

    def to_event(self) -> Event:
        occurred = self.occurred_at or datetime.now(UTC)
        if occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=UTC)
        return Event(
            event_id=self.event_id or str(uuid.uuid4()),
            customer_id=self.identity()[2] or "",
            name=self.name,
            properties=self.properties,
            occurred_at=occurred,
            anonymous_id=self.anonymous_id,
        )


class EventResult(BaseModel):
    index: int
    event_id: str | None
    status: Literal["accepted", "duplicate", "invalid"]
    customer_id: str | None = None
    """The customer the event resolved to (an alias or a merged profile id resolves to the customer)."""
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


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, Field(max_length=320), AfterValidator(_email)] | None = None
    phone: Annotated[str | None, Field(pattern=PHONE_PATTERN)] = None
    timezone: Annotated[str | None, AfterValidator(_timezone)] = None
    locale: Annotated[str | None, Field(pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")] = None
    attributes: Annotated[dict[str, Any], AfterValidator(_storable)] | None = Field(
        default=None, description="Merged into the stored attributes."
    )


class CustomerValuesOut(BaseModel):
    """The customer's value as the last refresh computed it (see README, "Customer value")."""

    orders_count: int
    revenue: float
    first_order_at: datetime
    last_order_at: datetime
    average_order_value: float
    clv: float = Field(description="Predicted revenue over the horizon (PARCOURS_CLV_HORIZON_DAYS).")
    clv_model: str = Field(description="bg_nbd_gamma_gamma, or historical_rate when data was thin.")
    expected_orders: float
    probability_alive: float | None
    computed_at: datetime = Field(description="The instant the refresh counted orders up to.")


class CustomerOut(BaseModel):
    id: str
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    attributes: dict[str, Any]
    values: CustomerValuesOut | None = Field(
        default=None, description="Computed by the customer-value refresh; null for a customer without orders then."
    )
    created_at: datetime
    updated_at: datetime


def _known(value: str) -> str:
    if value.startswith(ANON_PREFIX):
        raise ValueError(f"'{ANON_PREFIX}...' is an anonymous profile; identify a known customer id")
    return value


class IdentifyIn(BaseModel):
    """``POST /v1/identify``: link anonymous ids and aliases to a customer, merging the profiles behind them."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Annotated[CustomerId, AfterValidator(_known)] = Field(
        description="The known customer (created when new; a merged profile id stands for its customer)."
    )
    anonymous_ids: list[AnonymousId] = Field(
        default_factory=list, max_length=100, description="Device or cookie ids: their profiles merge in."
    )
    customer_ids: list[Annotated[CustomerId, AfterValidator(_known)]] = Field(
        default_factory=list, max_length=100, description="Other profiles of the same person (a lead, a duplicate)."
    )
    aliases: list[AliasIn] = Field(
        default_factory=list, max_length=100, description="Emails and phones events may name the customer by."
    )
    traits: CustomerIn | None = Field(default=None, description="Profile fields to set, as PUT /v1/customers.")
    explicit: bool = Field(
        default=False, description="The customer stated the traits themselves: a later merge keeps them."
    )
    source: Annotated[StorableText, Field(min_length=1, max_length=100)] = Field(
        default="api", description="Where the identification comes from (e.g. signup, login, checkout)."
    )
    actor: Annotated[StorableText, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="Who asked (a service or an operator); recorded in the merge log."
    )

    @model_validator(mode="after")
    def _not_itself(self) -> IdentifyIn:
        if self.customer_id in self.customer_ids:
            raise ValueError(f"customer_ids: '{self.customer_id}' is the customer itself")
        return self


class MergeOut(BaseModel):
    id: int
    customer_id: str
    merged_id: str | None
    """The profile merged in (``anon:{id}`` for an anonymous id; none for an email or phone)."""
    alias_kind: str
    alias_value: str
    source: str
    actor: str
    fields: dict[str, list[str]]
    """``taken``: fields that came from the merged profile; ``kept``: the customer's own won."""
    moved: dict[str, int]
    runs: list[dict[str, Any]]
    """The merged profile's journey runs: ``adopted`` (carries on for the customer), ``exited`` (the customer
    already ran that journey), ``closed``, or ``pending`` until told."""
    merged_at: datetime
    notified_at: datetime | None


class IdentifyOut(BaseModel):
    customer_id: str
    created: bool
    profile: CustomerOut
    merges: list[MergeOut]


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
