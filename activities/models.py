"""Inputs and outputs of the activities (pure pydantic: the workflow imports this module)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from contracts.customer_values import VALUE_FIELDS
from contracts.journey import Event, StepRecord
from journeys.models import EventHistoryCondition, WaitUntilStep


class ProfileRequest(BaseModel):
    customer_id: str


class Profile(BaseModel):
    customer_id: str
    exists: bool = True
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    channel_consent: dict[str, str] = Field(default_factory=dict)
    """channel -> ``granted`` | ``withdrawn`` (absent: never asked)."""
    topic_consent: dict[str, str] = Field(default_factory=dict)
    values: dict[str, Any] | None = None
    """The computed customer value (``contracts.customer_values.VALUE_FIELDS``; empty: none computed). None in
    profiles recorded before customer values existed: replaying them must see what they saw then."""

    def as_condition_data(self) -> dict[str, Any]:
        """The profile as branch conditions and templates see it: attributes at the top level too, then the
        computed values, whose names an attribute never shows through (it stays under ``attributes``)."""
        base = {
            "id": self.customer_id,
            "email": self.email,
            "phone": self.phone,
            "timezone": self.timezone,
            "locale": self.locale,
        }
        top = self.attributes
        if self.values is not None:
            top = {k: v for k, v in self.attributes.items() if k not in VALUE_FIELDS} | self.values
        return {**top, **{k: v for k, v in base.items() if v is not None}, "attributes": self.attributes}


class MomentRequest(BaseModel):
    """Which instant a ``wait_until`` step waits for, for this customer, as of ``now``."""

    customer_id: str
    step: WaitUntilStep
    now: datetime
    default_timezone: str = "UTC"
    trigger_properties: dict[str, Any] = Field(default_factory=dict)


class MomentResult(BaseModel):
    until: datetime | None
    """None when the profile has no usable date for the step."""
    timezone: str


class HistoryRequest(BaseModel):
    """Does the customer's event history meet each condition (as of ``now``, the journey's clock)?"""

    customer_id: str
    conditions: list[EventHistoryCondition]
    now: datetime


class HistoryResult(BaseModel):
    matches: list[bool]


class StepContext(BaseModel):
    """Who and where, for the activities of non-send steps."""

    journey_id: str
    journey_name: str = ""
    step_id: str
    customer_id: str
    entry_id: str
    trigger: Event
    idempotency_key: str = ""


class ProfileUpdate(BaseModel):
    context: StepContext
    set: dict[str, Any]


class ProfileUpdateResult(BaseModel):
    updated: bool
    attributes: dict[str, Any] = Field(default_factory=dict)
    """What was set, after rendering."""


class WebhookCall(BaseModel):
    context: StepContext
    url: str
    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | str | None = None
    """A mapping (rendered value by value, sent as JSON) or a Liquid string (sent as rendered)."""


class WebhookAnswer(BaseModel):
    ok: bool
    status: int | None = None
    body: Any = None
    error: str | None = None


class Handoff(BaseModel):
    context: StepContext
    target_journey: str
    now: datetime


class HandoffResult(BaseModel):
    outcome: Literal["entered", "refused", "already_running", "unavailable"]
    reason: str | None = None


class OutcomeRecord(BaseModel):
    journey_id: str
    journey_version: int
    customer_id: str
    entry_id: str
    workflow_id: str
    run_id: str
    steps: list[StepRecord]


class SendRequest(BaseModel):
    idempotency_key: str
    journey_id: str
    journey_name: str
    journey_version: int
    step_id: str
    visit: int = 1
    customer_id: str
    entry_id: str
    channel: str
    """The step's first channel (a single-channel step's only one)."""
    template: dict[str, Any]
    """Content for ``channel``."""
    topic: str | None = None
    kind: Literal["marketing", "transactional"] = "marketing"
    trigger: Event
    workflow_id: str = ""
    run_id: str = ""
    candidates: list[str] = Field(default_factory=list)
    """Channels to choose from, in the step's order (empty: just ``channel``)."""
    strategy: Literal["list", "preferred", "cheapest"] = "list"
    content: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Content per channel (with optional ``locales``)."""
    quiet_hours: Literal["wait", "skip"] = "wait"
    when_capped: Literal["wait", "skip"] = "skip"
    now: datetime | None = None
    """The journey's clock when it asked (quiet hours and frequency caps are judged on it)."""
    outcome: OutcomeRecord | None = None
    """When set, the activity records the step's outcome in its own transaction (its ``steps`` are ignored)."""
    outcome_started_at: datetime | None = None
    track: bool = True
    """Rewrite the message's links for click tracking (and add an open pixel to HTML email)."""


SendStatus = Literal["sent", "skipped", "failed", "deferred"]


class SendResult(BaseModel):
    status: SendStatus
    reason: str | None = None
    """Why a message was skipped or failed, e.g. ``no_consent:email``, ``topic_withdrawn:promotions``."""
    channel: str
    idempotency_key: str
    provider_message_id: str | None = None
    duplicate: bool = False
    """True when this key was already handled (a retried, replayed or reset send): nothing was delivered again."""
    retry_after_seconds: float | None = None
    """With ``deferred``: ask again after this long (quiet hours end, a frequency-cap slot frees up)."""
    outcome_recorded: bool = False
    """The step's outcome was recorded with the message (the workflow need not record it)."""


class SendFailure(BaseModel):
    """A send whose retries ran out: recorded as failed so the message log tells the whole story."""

    request: SendRequest
    reason: str


class ConversionRecord(BaseModel):
    journey_id: str
    journey_version: int
    customer_id: str
    entry_id: str
    event: Event
    value: float | None = None
    variant: str | None = None
    variants: dict[str, str] | None = None
    """Every split step's variant, by step id; None for runs that do not keep them."""
    last_message_key: str | None = None
    converted_at: datetime
    outcomes: OutcomeRecord | None = None
    """Step outcomes recorded in the same transaction (the step the goal cut short)."""
