"""The broadcast workflow's contract: its name and id, input (also what it continues as new with), result and
signals.

These models travel in histories: add fields with defaults only.
"""

from __future__ import annotations

from pydantic import BaseModel

BROADCAST_WORKFLOW_NAME = "BroadcastWorkflow"
SIGNAL_PAUSE = "pause"
SIGNAL_RESUME = "resume"
SIGNAL_CANCEL = "cancel"
QUERY_PROGRESS = "progress"


def broadcast_workflow_id(broadcast_id: str) -> str:
    return f"broadcast:{broadcast_id}"


class BroadcastCounts(BaseModel):
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    deferred: int = 0
    """Sends held back (quiet hours, a frequency cap with ``when_capped: wait``) and asked again later."""


class BroadcastInput(BaseModel):
    broadcast_id: str
    audience: int | None = None
    """Set once the audience is frozen (a run continued as new does not freeze again)."""
    counts: BroadcastCounts = BroadcastCounts()
    paused: bool = False
    cancelled: bool = False
    batches: int = 0


class BroadcastResult(BaseModel):
    broadcast_id: str
    status: str
    """``completed`` or ``cancelled``."""
    audience: int
    counts: BroadcastCounts
