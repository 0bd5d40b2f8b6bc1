"""The segment entry workflow's contract: its name, the schedule id its runs are named after, input and result.

``SegmentRunInput`` is also what a run continues as new with. These models travel in histories: add fields with
defaults only.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

SEGMENT_WORKFLOW_NAME = "SegmentEntryWorkflow"


def schedule_id(journey_id: str) -> str:
    """The id of the journey's segment schedule; also the prefix of its runs' workflow ids."""
    return f"segment:{journey_id}"


class SegmentRunInput(BaseModel):
    journey_id: str
    version: int
    """The version the schedule was set up for (informational: entries take the latest active version)."""
    run_key: str | None = None
    """Identifies this firing in entry ids; by default taken from the workflow id (the scheduled time)."""
    started_at: datetime | None = None
    after: str | None = None
    members: int = 0
    entered: int = 0
    refused: int = 0
    already_running: int = 0


class SegmentRunResult(BaseModel):
    journey_id: str
    run_key: str
    members: int
    entered: int
    refused: int
    already_running: int
    stopped: str | None = None
