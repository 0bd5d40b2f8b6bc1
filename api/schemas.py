"""Request and response bodies of the HTTP API, and its error shape ``{"error": {"message", "field"}}``."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from contracts.journey import Event
from journeys.values import DEFAULT_LIMITS, InputError, InputLimits, check_value, json_size
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

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"message": printable(self.message), "field": printable(self.field), **self.extra}}


def printable(text: str | None) -> str | None:
    """Text safe to answer in UTF-8 JSON, whatever input it quotes (a lone surrogate is written as ``\\udxxx``)."""
    if text is None:
        return None
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ErrorDetail(BaseModel):
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# --- events ------------------------------------------------------------------------------------------------


def _limits(info: ValidationInfo | None) -> InputLimits:
    context = info.context if info is not None else None
    limits = context.get("limits") if isinstance(context, dict) else None
    return limits if isinstance(limits, InputLimits) else DEFAULT_LIMITS


def _storable(value: Any, info: ValidationInfo) -> Any:
    """Refuse what PostgreSQL, Python or Temporal cannot take (NUL, lone surrogates, NaN, huge integers, deep
    nesting, over-long strings): ``journeys.values.check_value`` under the request's limits."""
    try:
        check_value(value, _limits(info))
    except InputError as exc:
        where = "the value" if exc.field == "body" else f"'{exc.field}'"
        raise ValueError(f"{where}: {exc.message}") from None
    return value


def _properties(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """Storable, and at most ``PARCOURS_MAX_PROPERTIES_BYTES`` as JSON."""
    _storable(value, info)
    limit = _limits(info).max_properties_bytes
    size = json_size(value)
    if size > limit:
        raise ValueError(f"{size} bytes as JSON, more than the {limit} allowed (PARCOURS_MAX_PROPERTIES_BYTES)")
    return value


StorableText = Annotated[str, AfterValidator(_storable)]
Properties = Annotated[dict[str, Any], AfterValidator(_properties)]

# Instants from outside: after conversion to UTC they stay well inside what datetime, PostgreSQL and the journey
# arithmetic (an instant plus a duration of up to a century) can represent.
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 12, 31, 23, 59, 59, tzinfo=UTC)


def _instant(value: datetime) -> datetime:
    try:
        utc = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("out of range once converted to UTC") from None
    if not EARLIEST <= utc <= LATEST:
        raise ValueError(f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
    return utc


Instant = Annotated[datetime, AfterValidator(_instant)]


def email_address(value: str) -> str:
    """One email address, by RFC 5321/5322 syntax (``email-validator``, no DNS lookup): no CR/LF, no comma, no
    second address, no display name. Answers the address with its domain normalised; ValueError saying why."""
    try:
        checked = validate_email(value, check_deliverability=False, allow_display_name=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not an email address: {exc}") from None
    return checked.normalized


def is_email(value: str) -> bool:
    try:
        email_address(value)
    except ValueError:
        return False
    return True


def phone_number(value: str) -> str:
    """A phone number in international form (``+`` and the country code; spaces and punctuation allowed), as
    E.164 (``+33612345678``); ValueError otherwise (``phonenumbers``)."""
    if len(value) > 64:
        raise ValueError("not a phone number: too long")
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number: use the international form, e.g. +33612345678") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError("not a phone number: wrong length for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _email(value: str | None) -> str | None:
    return email_address(value) if value is not None else None


def _phone(value: str | None) -> str | None:
    return phone_number(value) if value is not None else None


def _timezone(value: str | None) -> str | None:
    if value is not None:
        if len(value) > 64 or not re.fullmatch(r"[A-Za-z0-9_+/-]+", value) or value.startswith("/") or ".." in value:
            raise ValueError("unknown time zone (use an IANA name like Europe/Paris)")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone '{value}' (use an IANA name like Europe/Paris)") from None
    return value


class AliasIn(BaseModel):
    """An address linked to a customer by ``POST /v1/identify``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["email", "phone"]
    value: Annotated[str, Field(min_length=1, max_length=320)]

    @model_validator(mode="after")
    def _check(self) -> AliasIn:
        self.value = email_address(self.value) if self.kind == "email" else phone_number(self.value)
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
    properties: Properties = Field(default_factory=dict)
    occurred_at: Instant | None = Field(default=None, description="Defaults to the time the API received it.")

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


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, Field(max_length=320), AfterValidator(_email)] | None = None
    phone: Annotated[str | None, Field(max_length=64), AfterValidator(_phone)] = None
    timezone: Annotated[str | None, Field(max_length=64), AfterValidator(_timezone)] = None
    locale: Annotated[str | None, Field(pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")] = None
    attributes: Properties | None = Field(default=None, description="Merged into the stored attributes.")


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
    source: StorableText = Field(default="api", min_length=1, max_length=100)
    lawful_basis: StorableText | None = Field(default=None, max_length=100)


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


class SegmentCountOut(BaseModel):
    """A named segment's exact member count: counted for this request, or the stored result of an earlier exact
    count when ``max_age`` allowed one (then ``stored`` is true and ``exact_as_of`` says how old it is)."""

    id: str
    count: int = Field(description="Members of the segment as of exact_as_of (exact then; it may differ now).")
    exact_as_of: datetime = Field(
        description="The instant the count is exact for: its database snapshot and the start of its event windows."
    )
    counted_at: datetime = Field(description="When that count finished.")
    age_seconds: float = Field(description="Seconds from exact_as_of to this answer.")
    stored: bool = Field(
        description="True: answered from the last exact count kept for this definition (max_age allowed it); "
        "false: counted for this request (and kept)."
    )
    milliseconds: float = Field(description="How long that count took.")
    sample: list[str] = Field(description="The first members by id as of exact_as_of, at most `sample` of them.")
