"""Inputs and outputs of the segment activities (pure pydantic: the segment workflow imports this module)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class SegmentPageRequest(BaseModel):
    journey_id: str
    after: str | None = None
    """The last customer id of the previous page (keyset cursor); None for the first page."""
    now: datetime
    """The segment run's time (event-history windows end here)."""


class SegmentPage(BaseModel):
    customer_ids: list[str] = Field(default_factory=list)
    batch_size: int = 200
    max_per_second: float = 50
    stopped: str | None = None
    """Why the run should stop: ``journey paused``, ``journey archived``, ``no segment``, ``unknown journey``."""


class SegmentEnterRequest(BaseModel):
    journey_id: str
    run_key: str
    """Identifies the schedule run; part of every entry id (``segment:{journey}:{run_key}:{customer}``)."""
    customer_ids: list[str]
    now: datetime


class SegmentEnterResult(BaseModel):
    entered: list[str] = Field(default_factory=list)
    refused: list[str] = Field(default_factory=list)
    """Not let in by the journey's re-entry policy."""
    already_running: list[str] = Field(default_factory=list)
    """In the journey right now: left alone (the synthetic trigger just reaches the running run)."""
    version: int | None = None
    stopped: str | None = None
