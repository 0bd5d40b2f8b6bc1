"""The broadcast language: one message, once, to the members of a segment.

A broadcast names its audience (a saved segment by ``ref``, or inline ``where``/``events``), its message in the
same fields as a journey's ``send`` step (``journeys.models.MessageFields``: ``channel`` + ``template``, or
``channels`` + ``content``, with ``locales``, ``topic``, ``kind``, ``quiet_hours``, ``when_capped``, ``track``),
checked by the same validators, when it goes (``send_at``: now, an
instant, or ``{local: "2026-12-05T10:00"}`` in each customer's own zone), how fast (``rate_limit`` per second), and
how it is measured (``goal`` event within a window, ``holdout`` percent).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from journeys.conditions import ConditionGroup
from journeys.models import (
    Audience,
    Duration,
    EventHistoryCondition,
    EventName,
    Identifier,
    MessageFields,
    SendStep,
    _Model,
    _profile_fields_only,
)
from journeys.templates import TemplateError, check_template, template_strings

BROADCAST_STEP = "broadcast"
"""The step id of a broadcast's messages (``messages.step_id``), so reports per step read them like a journey's."""


def broadcast_journey_id(broadcast_id: str) -> str:
    """What a broadcast's messages carry as ``journey_id``: caps, clicks and reports count them with journeys'."""
    return f"broadcast:{broadcast_id}"


def broadcast_message_key(broadcast_id: str, customer_id: str) -> str:
    """The idempotency key of one customer's message of one broadcast: a retry or resume never sends twice."""
    return f"broadcast:{broadcast_id}:{customer_id}"


class BroadcastSegment(_Model):
    """A saved segment by ``ref``, or the conditions inline."""

    ref: Identifier | None = None
    where: ConditionGroup | None = None
    events: list[EventHistoryCondition] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ref_or_conditions(self) -> BroadcastSegment:
        if self.ref is not None and (self.where is not None or self.events):
            raise ValueError("name a saved segment ('ref') or give 'where'/'events', not both")
        _profile_fields_only(self.where)
        return self

    def inline(self) -> Audience:
        return Audience(where=self.where, events=self.events)


class LocalTime(_Model):
    local: datetime
    """A wall-clock time (no offset), e.g. ``2026-12-05T10:00``: each customer receives it then in their zone."""

    @field_validator("local")
    @classmethod
    def _naive(cls, value: datetime) -> datetime:
        if value.tzinfo is not None:
            raise ValueError("a local send time has no offset: it is read in each customer's time zone")
        return value


class BroadcastGoal(_Model):
    event: EventName
    within: Duration = timedelta(days=7)
    """A goal event this long after the message (for the holdout: after the send started) is a conversion."""


class BroadcastHoldout(_Model):
    percent: float = Field(gt=0, lt=100)


class Broadcast(MessageFields):
    id: Identifier
    name: str = Field(default="", max_length=200)
    segment: BroadcastSegment
    send_at: Literal["now"] | datetime | LocalTime = "now"
    rate_limit: float | None = Field(default=None, gt=0, le=100_000)
    """Messages per second at most (none: as fast as the workers go)."""
    batch_size: int = Field(default=500, ge=1, le=5000)
    goal: BroadcastGoal | None = None
    holdout: BroadcastHoldout | None = None

    @field_validator("send_at")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("give the instant with an offset (2026-12-05T10:00:00Z), or {local: ...} for each zone")
        return value

    @model_validator(mode="after")
    def _templates(self) -> Broadcast:
        for channel, fields in self.all_content().items():
            for text in template_strings(fields):
                try:
                    check_template(text)
                except TemplateError as exc:
                    raise ValueError(f"content.{channel}: template error: {exc}") from None
        return self

    def send_step(self) -> SendStep:
        """The message as a journey ``send`` step: the send policy and rendering treat both alike."""
        return SendStep(id=BROADCAST_STEP, type="send", **self.message_fields())

    def display_name(self) -> str:
        return self.name or self.id
