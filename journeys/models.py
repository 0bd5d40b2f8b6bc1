"""The journey language, version 1: a trigger, a goal and a list of steps.

Steps run in the order they are listed unless a step names where to go (``next``, ``on_event``,
``on_timeout``, ``then``, ``else``); ``end`` ends the journey. Every step has a stable ``id``: message
idempotency keys, analytics and the Temporal UI all use it, so keep it when you edit a journey.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from journeys.conditions import ConditionGroup
from journeys.durations import format_duration, parse_duration

CHANNELS = ("email", "sms", "push", "in_app", "webhook")
END = "end"

# What each channel's template must contain (at least one of each tuple).
REQUIRED_CONTENT: dict[str, tuple[tuple[str, ...], ...]] = {
    "email": (("subject",), ("text", "html")),
    "sms": (("text",),),
    "push": (("title",), ("body",)),
    "in_app": (("body",),),
    "webhook": (("payload",),),
}

Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
EventName = Annotated[str, Field(min_length=1, max_length=200)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Step(_Model):
    id: Identifier
    label: str | None = None
    """Shown in the Temporal UI and the CLI; defaults to the id."""

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == END:
            raise ValueError(f"'{END}' is reserved: it means the journey ends")
        return value

    def targets(self) -> dict[str, str | None]:
        """Fields that name another step, with their (possibly defaulted) values."""
        return {}


class SendStep(_Step):
    type: Literal["send"]
    channel: str
    template: dict[str, Any]
    topic: str | None = None
    kind: Literal["marketing", "transactional"] = "marketing"
    next: str | None = None

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, value: str) -> str:
        if value not in CHANNELS:
            raise ValueError(f"unknown channel '{value}': use one of {', '.join(CHANNELS)}")
        return value

    @model_validator(mode="after")
    def _content_fits_channel(self) -> SendStep:
        for one_of in REQUIRED_CONTENT[self.channel]:
            if not any(self.template.get(name) for name in one_of):
                raise ValueError(f"a {self.channel} template needs {' or '.join(repr(n) for n in one_of)}")
        if self.channel == "webhook" and not isinstance(self.template.get("payload"), dict):
            raise ValueError("a webhook template's 'payload' must be an object")
        return self

    def targets(self) -> dict[str, str | None]:
        return {"next": self.next}


class WaitStep(_Step):
    type: Literal["wait"]
    duration: Duration
    next: str | None = None

    def targets(self) -> dict[str, str | None]:
        return {"next": self.next}


class WaitForStep(_Step):
    """Wait until the customer does something, or give up after ``timeout``."""

    type: Literal["wait_for"]
    event: EventName
    where: ConditionGroup | None = None
    timeout: Duration
    since: Literal["entry", "step"] = "entry"
    """``entry``: an event received any time since the customer entered counts; ``step``: only from now on."""
    on_event: str | None = None
    on_timeout: str | None = None

    def targets(self) -> dict[str, str | None]:
        return {"on_event": self.on_event, "on_timeout": self.on_timeout}


class BranchStep(_Step):
    """Go to ``then`` when the condition holds, else to ``else``.

    Fields start with ``profile.`` (the customer: ``profile.email``, ``profile.country`` for an attribute) or
    ``trigger.`` (the properties of the event that started the journey).
    """

    type: Literal["branch"]
    where: ConditionGroup
    then: str | None = None
    else_: str | None = Field(default=None, alias="else")

    @field_validator("where")
    @classmethod
    def _known_roots(cls, value: ConditionGroup) -> ConditionGroup:
        for field in value.fields():
            if field.split(".", 1)[0] not in ("profile", "trigger"):
                raise ValueError(f"field '{field}' must start with 'profile.' or 'trigger.'")
        return value

    def targets(self) -> dict[str, str | None]:
        return {"then": self.then, "else": self.else_}


class ExitStep(_Step):
    type: Literal["exit"]
    reason: str = "exit step"


Step = Annotated[SendStep | WaitStep | WaitForStep | BranchStep | ExitStep, Field(discriminator="type")]
WAITING_STEPS = (WaitStep, WaitForStep)


class Trigger(_Model):
    event: EventName
    where: ConditionGroup | None = None
    """A filter on the trigger event's properties (``field: cart.total`` means ``properties.cart.total``)."""


class Goal(_Model):
    """Reaching the goal counts as a conversion and ends the journey, whatever step the customer is on."""

    event: EventName
    where: ConditionGroup | None = None
    value_property: str | None = None
    """A property of the goal event holding the conversion's value (revenue), e.g. ``total``."""


class Journey(_Model):
    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    trigger: Trigger
    goal: Goal | None = None
    steps: list[Step] = Field(min_length=1)

    def step(self, step_id: str) -> SendStep | WaitStep | WaitForStep | BranchStep | ExitStep:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def first_step(self) -> str:
        return self.steps[0].id

    def resolve(self, step_id: str, field: str) -> str:
        """Where ``field`` of step ``step_id`` leads: the named step, ``end``, or by default the next one."""
        index = next(i for i, s in enumerate(self.steps) if s.id == step_id)
        target = self.steps[index].targets().get(field)
        if target:
            return target
        return self.steps[index + 1].id if index + 1 < len(self.steps) else END

    def successors(self, step_id: str) -> dict[str, str]:
        step = self.step(step_id)
        return {field: self.resolve(step_id, field) for field in step.targets()}

    def listened_events(self) -> set[str]:
        """Event names a running customer of this journey reacts to (besides the trigger)."""
        names = {s.event for s in self.steps if isinstance(s, WaitForStep)}
        if self.goal:
            names.add(self.goal.event)
        return names
