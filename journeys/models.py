"""The journey language, version 1: a trigger, a goal and a list of steps.

Steps run in the order they are listed unless a step names where to go (``next``, ``on_event``,
``on_timeout``, ``then``, ``else``); ``end`` ends the journey. Every step has a stable ``id``: message
idempotency keys, analytics and the Temporal UI all use it, so keep it when you edit a journey.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from journeys import calendar
from journeys.conditions import ConditionGroup
from journeys.durations import format_duration, format_offset, parse_clock, parse_duration, parse_offset

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
Offset = Annotated[timedelta, BeforeValidator(parse_offset), PlainSerializer(format_offset, return_type=str)]
ClockTime = Annotated[
    time,
    BeforeValidator(lambda v: parse_clock(v) if isinstance(v, str) else v),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
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


class MessageFields(_Model):
    """What one message says and how the send policy treats it: the fields a journey's ``send`` step and a
    broadcast share. The channel is fixed (``channel`` + ``template``) or chosen per customer from ``channels`` (a
    priority list, or ``preferred`` / ``cheapest``) with ``content`` for each channel: the first channel the
    customer consented to and can be reached on is used, and on a permanent delivery failure the next one is
    tried. Content may carry ``locales`` overrides (``fr``, ``fr-CA``) chosen by the customer's locale.
    """

    channel: str | None = None
    template: dict[str, Any] | None = None
    channels: list[str] | Literal["preferred", "cheapest"] | None = None
    content: dict[str, dict[str, Any]] | None = None
    topic: str | None = None
    kind: Literal["marketing", "transactional"] = "marketing"
    quiet_hours: Literal["wait", "skip"] = "wait"
    """Marketing inside the customer's quiet hours waits until they end, or is skipped."""
    when_capped: Literal["wait", "skip"] = "skip"
    """Marketing over a frequency cap is skipped, or waits for the next allowed slot."""
    track: bool = True
    """Rewrite the message's links to tracked redirect links (clicks become ``email_clicked``, ``sms_clicked`` or
    ``push_opened`` events) and add an open pixel to HTML email; ``false`` sends the links as they are."""

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, value: str | None) -> str | None:
        if value is not None:
            _check_channel(value)
        return value

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: list[str] | str | None) -> list[str] | str | None:
        for name in value if isinstance(value, list) else []:
            _check_channel(name)
        return value

    @field_validator("content")
    @classmethod
    def _known_content_channels(cls, value: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        for name in value or {}:
            _check_channel(name)
        return value

    @model_validator(mode="after")
    def _channels_and_content(self) -> Self:
        if (self.channel is None) == (self.channels is None):
            raise ValueError("give either 'channel' (with 'template') or 'channels' (with 'content')")
        content = dict(self.content or {})
        if self.channel is not None:
            _check_channel(self.channel)
            if self.template is not None:
                content[self.channel] = self.template
            if self.channel not in content:
                raise ValueError(f"a send on '{self.channel}' needs a 'template'")
        elif isinstance(self.channels, list):
            if not self.channels:
                raise ValueError("'channels' must list at least one channel")
            for name in self.channels:
                _check_channel(name)
                if name not in content:
                    raise ValueError(f"channel '{name}' is listed but 'content' has nothing for it")
        elif not content:
            raise ValueError(f"'channels: {self.channels}' chooses among the channels in 'content': give some")
        for name, fields in content.items():
            _check_channel(name)
            _check_content(name, fields)
            for locale, override in (fields.get("locales") or {}).items():
                if not isinstance(override, dict):
                    raise ValueError(f"content.{name}.locales.{locale} must be an object of fields")
        return self

    def message_fields(self) -> dict[str, Any]:
        """The shared fields' values, as given (to build one model from another)."""
        return {name: getattr(self, name) for name in MessageFields.model_fields}

    def all_content(self) -> dict[str, dict[str, Any]]:
        """Content per channel, whichever form the message was written in."""
        content = dict(self.content or {})
        if self.channel is not None and self.template is not None:
            content[self.channel] = self.template
        return content

    def candidates(self) -> list[str]:
        """Channels in the message's own order (for ``preferred``/``cheapest`` the send activity reorders them)."""
        if self.channel is not None:
            return [self.channel]
        if isinstance(self.channels, list):
            return list(self.channels)
        return list(self.all_content())


class SendStep(MessageFields, _Step):
    """Send one message (``MessageFields``), then go on to ``next``."""

    type: Literal["send"]
    next: str | None = None

    def targets(self) -> dict[str, str | None]:
        return {"next": self.next}


def _check_channel(name: str) -> None:
    if name not in CHANNELS:
        raise ValueError(f"unknown channel '{name}': use one of {', '.join(CHANNELS)}")


def _check_content(channel: str, fields: dict[str, Any]) -> None:
    for one_of in REQUIRED_CONTENT[channel]:
        if not any(fields.get(name) for name in one_of):
            raise ValueError(f"a {channel} template needs {' or '.join(repr(n) for n in one_of)}")
    if channel == "webhook" and not isinstance(fields.get("payload"), dict):
        raise ValueError("a webhook template's 'payload' must be an object")


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


class EventHistoryCondition(_Model):
    """Part of a segment: how many times the customer did ``event`` in the last ``within``."""

    event: EventName
    within: Duration
    where: ConditionGroup | None = None
    count: Literal["none", "any"] | int = "any"
    """``none``: never in that time (e.g. no purchase in 60 days); ``any``: at least once; a number: at least N."""


BRANCH_ROOTS = ("profile", "trigger", "events", "responses")


def _check_roots(group: ConditionGroup | None) -> ConditionGroup | None:
    for field in group.fields() if group else []:
        if field.split(".", 1)[0] not in BRANCH_ROOTS:
            raise ValueError(
                f"field '{field}' must start with profile. (the customer), trigger. (the trigger event), "
                "events.<name>. (the last such event received) or responses.<name>. (a webhook step's answer)"
            )
    return group


class BranchCase(_Model):
    """A case holds when its ``where`` holds and every ``history`` condition does (at least one is given)."""

    where: ConditionGroup | None = None
    history: list[EventHistoryCondition] = Field(default_factory=list)
    next: str | None = None

    _roots = field_validator("where")(classmethod(lambda cls, v: _check_roots(v)))

    @model_validator(mode="after")
    def _something_to_test(self) -> BranchCase:
        if self.where is None and not self.history:
            raise ValueError("a case needs a 'where' or a 'history' condition")
        return self


class BranchStep(_Step):
    """Go where the first matching case says, else to ``default`` (or: ``where``, ``then``, ``else``).

    ``where`` fields start with ``profile.`` (the customer: ``profile.email``, ``profile.country`` for an
    attribute), ``trigger.`` (the trigger event's properties), ``events.<name>.`` (the last ``<name>`` event
    received in this journey) or ``responses.<name>.`` (what a webhook step answered). ``history`` conditions
    look at everything the customer did, e.g. "ordered in the last 30 days".
    """

    type: Literal["branch"]
    where: ConditionGroup | None = None
    history: list[EventHistoryCondition] = Field(default_factory=list)
    then: str | None = None
    else_: str | None = Field(default=None, alias="else")
    cases: list[BranchCase] | None = None
    default: str | None = None

    _roots = field_validator("where")(classmethod(lambda cls, v: _check_roots(v)))

    @model_validator(mode="after")
    def _one_form(self) -> BranchStep:
        simple = self.where is not None or bool(self.history)
        if simple == (self.cases is not None):
            raise ValueError("give either 'where'/'history' with 'then'/'else', or 'cases' with 'default'")
        if self.cases is not None and not self.cases:
            raise ValueError("'cases' must list at least one case")
        if self.cases is None and (self.default is not None):
            raise ValueError("'default' goes with 'cases' (use 'else' with 'where')")
        return self

    def case_list(self) -> list[BranchCase]:
        """The cases, with the simple form as one case."""
        if self.cases is not None:
            return self.cases
        return [BranchCase(where=self.where, history=self.history, next=self.then)]

    def history_conditions(self) -> list[EventHistoryCondition]:
        return [h for case in self.case_list() for h in case.history]

    def targets(self) -> dict[str, str | None]:
        if self.cases is not None:
            return {**{f"cases[{i}]": case.next for i, case in enumerate(self.cases)}, "default": self.default}
        return {"then": self.then, "else": self.else_}


class UpdateProfileStep(_Step):
    """Set profile attributes (values may be Liquid templates over ``customer`` and ``event``)."""

    type: Literal["update_profile"]
    set: dict[str, Any] = Field(min_length=1)
    next: str | None = None

    def targets(self) -> dict[str, str | None]:
        return {"next": self.next}


class WebhookStep(_Step):
    """Call an HTTP endpoint; later steps branch on its JSON answer as ``responses.<save_as>``.

    The body and headers may be Liquid templates. A mapping body is rendered value by value and sent as JSON; a
    string body is rendered as one Liquid template and sent as it comes out, with the step's ``Content-Type``
    header or ``text/plain``. 5xx and timeouts are retried; a 4xx, or retries running out, goes to ``on_failure``
    (by default: on to the next step, with the failure recorded).
    """

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    method: Literal["GET", "POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | str | None = None
    save_as: Identifier | None = None
    next: str | None = None
    on_failure: str | None = None

    def targets(self) -> dict[str, str | None]:
        return {"next": self.next, "on_failure": self.on_failure}


class StartJourneyStep(_Step):
    """Hand the customer to another journey (its latest version; its re-entry policy applies)."""

    type: Literal["start_journey"]
    journey: Identifier
    next: str | None = None

    def targets(self) -> dict[str, str | None]:
        return {"next": self.next}


class WaitUntilStep(_Step):
    """Wait for a moment on the customer's calendar, in their time zone.

    One of: ``at`` alone (the next such time of day, optionally only on ``weekdays``); ``date`` (a fixed
    date-time; without a zone it is the customer's local time); ``attribute`` (a date or date-time in the
    profile, e.g. ``trial_ends_at``, or in the trigger event, ``trigger.offer_ends_at``, plus ``offset``; with
    ``every_year`` the next anniversary, e.g. a birthday). With ``at``, a date-time's day is taken at that time
    of day. A moment already past goes on at once, or to ``on_past``.
    """

    type: Literal["wait_until"]
    at: ClockTime | None = None
    weekdays: list[Weekday] | None = None
    date: datetime | None = None
    attribute: str | None = None
    offset: Offset = timedelta(0)
    every_year: bool = False
    next: str | None = None
    on_missing: str | None = None
    """Where to go when the profile has no usable date; by default the journey ends there."""
    on_past: str | None = None
    """Where to go when the moment has already passed (e.g. skip an "ends tomorrow" reminder); default: on."""

    @field_validator("date")
    @classmethod
    def _inside_the_calendar(cls, value: datetime | None) -> datetime | None:
        if value is not None and not calendar.EARLIEST_YEAR <= value.year <= calendar.LATEST_YEAR:
            raise ValueError(f"the year must lie between {calendar.EARLIEST_YEAR} and {calendar.LATEST_YEAR}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> WaitUntilStep:
        if self.date is not None and self.attribute is not None:
            raise ValueError("give either 'date' or 'attribute', not both")
        if self.date is None and self.attribute is None and self.at is None:
            raise ValueError("give 'at' (a time of day), 'date' or 'attribute'")
        if self.weekdays is not None and not self.weekdays:
            raise ValueError("'weekdays' must list at least one day")
        if self.every_year and self.attribute is None:
            raise ValueError("'every_year' goes with 'attribute' (e.g. a birthday)")
        return self

    def targets(self) -> dict[str, str | None]:
        return {"next": self.next, "on_missing": self.on_missing or END, "on_past": self.on_past}


class SplitVariant(_Model):
    name: Identifier
    weight: float = Field(gt=0)
    next: str | None = None


class SplitStep(_Step):
    """Send each customer down one variant, at random by weight, the same variant every time for a customer."""

    type: Literal["split"]
    variants: list[SplitVariant] = Field(min_length=2)

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, value: list[SplitVariant]) -> list[SplitVariant]:
        names = [v.name for v in value]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique: {', '.join(names)}")
        return value

    def targets(self) -> dict[str, str | None]:
        return {f"variants.{v.name}": v.next for v in self.variants}


class ExitStep(_Step):
    type: Literal["exit"]
    reason: str = "exit step"


AnyStep = (
    SendStep
    | WaitStep
    | WaitForStep
    | WaitUntilStep
    | BranchStep
    | SplitStep
    | UpdateProfileStep
    | WebhookStep
    | StartJourneyStep
    | ExitStep
)
Step = Annotated[AnyStep, Field(discriminator="type")]
WAITING_STEPS = (WaitStep, WaitForStep, WaitUntilStep)


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
    within: Duration | None = None
    """Conversion window from entry: a goal event later than this does not count (and does not end the journey)."""


class ExitCriterion(_Model):
    """Leave the journey when the customer does something (``event``) or becomes something (``profile``).

    Event criteria are watched at every step and during every wait; profile criteria (fields start with
    ``profile.``) are checked before every step.
    """

    event: EventName | None = None
    where: ConditionGroup | None = None
    """With ``event``: a filter on its properties. Without: a condition on ``profile.*`` fields."""
    reason: str | None = None

    @model_validator(mode="after")
    def _event_or_profile(self) -> ExitCriterion:
        if self.event is None and self.where is None:
            raise ValueError("an exit criterion needs an 'event' or a 'where' on the profile")
        if self.event is None and self.where is not None:
            for field in self.where.fields():
                if not field.startswith("profile."):
                    raise ValueError(f"field '{field}' must start with 'profile.' in a profile exit criterion")
        return self

    def describe(self) -> str:
        return self.reason or (f"event {self.event}" if self.event else "profile condition")


class Holdout(_Model):
    """A control group: this share of entrants is counted and watched for the goal, but receives nothing."""

    percent: float = Field(gt=0, lt=100)
    observe_for: Duration | None = None
    """How long a held-out customer is watched for the goal (default: the goal's window, else 30 days)."""


class Segment(_Model):
    """Customers who match, evaluated on a schedule, enter the journey (those already in it are left alone)."""

    every: Duration | None = None
    """Evaluate at this interval (e.g. ``1d``)..."""
    cron: str | None = None
    """... or on this cron schedule (UTC), e.g. ``0 9 * * 1``."""
    ref: Identifier | None = None
    """A named segment (``PUT /v1/segments/{id}``) instead of ``where``/``events``, read at every firing."""
    where: ConditionGroup | None = None
    """Conditions on ``profile.*`` fields."""
    events: list[EventHistoryCondition] = Field(default_factory=list)
    batch_size: int = Field(default=200, ge=1, le=5000)
    max_per_second: float = Field(default=50, gt=0, le=10_000)
    """Entries per second at most, so a large segment does not swamp Temporal."""

    @model_validator(mode="after")
    def _one_schedule(self) -> Segment:
        if (self.every is None) == (self.cron is None):
            raise ValueError("a segment needs exactly one of 'every' or 'cron'")
        if self.ref is not None and (self.where is not None or self.events):
            raise ValueError("a segment names a saved segment ('ref') or gives 'where'/'events', not both")
        _profile_fields_only(self.where)
        return self

    def audience(self) -> Audience:
        """The conditions alone (for a ``ref``, the caller reads the named segment's instead)."""
        return Audience(where=self.where, events=self.events)


def _profile_fields_only(where: ConditionGroup | None) -> None:
    for field in where.fields() if where is not None else []:
        if not field.startswith("profile."):
            raise ValueError(f"segment field '{field}' must start with 'profile.'")


class Audience(_Model):
    """Who is in a segment: profile conditions and event history, evaluated in SQL (``store/segments.py``).

    A named segment (``PUT /v1/segments/{id}``) is one of these; so is a broadcast's inline segment.
    """

    where: ConditionGroup | None = None
    """Conditions on ``profile.*`` fields."""
    events: list[EventHistoryCondition] = Field(default_factory=list)

    @model_validator(mode="after")
    def _profile_only(self) -> Audience:
        _profile_fields_only(self.where)
        return self


class EntryPolicy(_Model):
    """Who may enter, and how often."""

    reentry: Literal["always", "once", "cooldown"] = "always"
    """``always``: again whenever triggered after the previous run ended; ``once``: once ever; ``cooldown``: again
    only ``cooldown`` after the previous entry."""
    cooldown: Duration | None = None
    segment: Segment | None = None

    @model_validator(mode="after")
    def _cooldown_given(self) -> EntryPolicy:
        if (self.reentry == "cooldown") != (self.cooldown is not None):
            raise ValueError("'cooldown' goes with reentry: cooldown (and only with it)")
        return self


SEGMENT_TRIGGER = "$segment"
"""The trigger event name of entries made by a segment schedule."""


class Journey(_Model):
    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    trigger: Trigger = Field(default_factory=lambda: Trigger(event=SEGMENT_TRIGGER))
    """What starts a customer's run; journeys entered by ``entry.segment`` alone may leave it out."""
    entry: EntryPolicy = Field(default_factory=EntryPolicy)
    goal: Goal | None = None
    exit_when: list[ExitCriterion] = Field(default_factory=list)
    holdout: Holdout | None = None
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _has_a_way_in(self) -> Journey:
        if self.trigger.event == SEGMENT_TRIGGER and self.entry.segment is None:
            raise ValueError("a journey needs a 'trigger' event or an 'entry.segment'")
        return self

    def step(self, step_id: str) -> AnyStep:
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
        names |= {c.event for c in self.exit_when if c.event}
        if self.goal:
            names.add(self.goal.event)
        return names
