"""What a running journey receives and reports: the workflow's input, signals, query and result.

These models travel through Temporal (pydantic data converter). Add fields with defaults only: running
workflows and recorded histories carry the old shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from journeys.models import Journey

WORKFLOW_NAME = "JourneyWorkflow"
EVENT_SIGNAL = "event"
EXIT_SIGNAL = "exit"
IDENTIFY_SIGNAL = "identified"
STATE_QUERY = "state"


def workflow_id(journey_id: str, customer_id: str) -> str:
    """One workflow per (journey, customer): routing an event needs no lookup."""
    return f"{journey_id}:{customer_id}"


class Event(BaseModel):
    """A behaviour event: what a customer did, when."""

    event_id: str
    customer_id: str
    name: str
    properties: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime
    anonymous_id: str | None = None
    """The device or cookie id the event was sent under, if any (``customer_id`` is what it resolved to)."""


class ExitRequest(BaseModel):
    """Asks a running journey to end now (archiving a journey, erasing a customer, an operator)."""

    reason: str


class Identified(BaseModel):
    """Tells a run started for a visitor (or a profile since merged) that it now belongs to ``customer_id``."""

    customer_id: str
    merge_id: int
    previous_customer_id: str


class StepRecord(BaseModel):
    step_id: str
    type: str
    visit: int = 1
    outcome: str
    """What happened: ``sent``, ``skipped``, ``failed``, ``waited``, ``event``, ``timeout``, ``then``, ..."""
    detail: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime


class WaitInProgress(BaseModel):
    """A wait the run was in when it continued as new: the next run resumes it instead of starting the step over."""

    step_id: str
    """The step waiting (``$holdout`` for the control group's observation)."""
    visit: int
    started_at: datetime
    until: datetime
    """When the wait ends: the next run waits only for what is left."""


class JourneyProgress(BaseModel):
    """Everything a run needs to carry on after continue-as-new."""

    current_step: str
    visits: dict[str, int] = Field(default_factory=dict)
    steps_done: list[StepRecord] = Field(default_factory=list)
    steps_done_total: int = 0
    events: list[Event] = Field(default_factory=list)
    seen_event_ids: list[str] = Field(default_factory=list)
    step_started_event_index: int = 0
    last_message_key: str | None = None
    entered_at: datetime | None = None
    variant: str | None = None
    """The split variant the customer took last, or ``holdout`` for the control group."""
    variants: dict[str, str] = Field(default_factory=dict)
    """Every split step's variant, by step id (runs started before ``assignments-kept`` keep only ``variant``)."""
    responses: dict[str, Any] = Field(default_factory=dict)
    """Webhook steps' answers by ``save_as`` (``{"status": 200, "body": ...}``), for later branches."""
    customer_id: str | None = None
    """Set once the run was identified (``IDENTIFY_SIGNAL``): the customer it carries on for."""
    waiting: WaitInProgress | None = None
    """Set when the run continued as new in the middle of a wait (many events received while waiting)."""


class JourneyInput(BaseModel):
    journey_id: str
    journey_version: int
    definition: Journey
    """The pinned version: a running customer never sees a later edit."""
    customer_id: str
    trigger: Event
    progress: JourneyProgress | None = None
    """Set when the run continues as new."""
    default_timezone: str = "UTC"
    """For customers without a time zone (settings.default_timezone at entry)."""
    continue_after_signals: int | None = None
    """Continue as new from a wait after this many events (None: the workflow's ``CONTINUE_AFTER_SIGNALS``)."""

    @property
    def entry_id(self) -> str:
        """Identifies this entry into the journey; part of every message's idempotency key."""
        return self.trigger.event_id


JourneyStatus = Literal["running", "completed", "converted", "exited", "failed"]


class JourneyState(BaseModel):
    """What the ``state`` query answers: where the customer is and what has happened."""

    journey_id: str
    journey_version: int
    customer_id: str
    entry_id: str
    status: JourneyStatus
    current_step: str | None
    steps_done: list[StepRecord]
    steps_done_total: int
    events_seen: list[Event]
    exit_reason: str | None = None
    variant: str | None = None
    entered_as: str | None = None
    """The profile id the run started for, when it has since been identified as ``customer_id``."""


class JourneyResult(BaseModel):
    status: JourneyStatus
    exit_reason: str | None = None
    steps_done_total: int = 0
    conversion_event_id: str | None = None
    variant: str | None = None
