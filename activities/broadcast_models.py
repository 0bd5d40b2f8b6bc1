"""Inputs and outputs of the broadcast activities (pure pydantic: the workflow imports this module)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from contracts.broadcast import BroadcastCounts


class FreezeRequest(BaseModel):
    broadcast_id: str
    now: datetime


class FreezeResult(BaseModel):
    audience: int
    status: str
    """The broadcast's status after freezing (``cancelled`` when it was cancelled before it started)."""


class BatchRequest(BaseModel):
    broadcast_id: str
    now: datetime
    """The workflow's clock: who is due, and quiet hours and caps, are judged on it."""
    limit: int
    lane: int = 0
    lanes: int = 1
    """The batch sends to the customers of its ``lane`` (``activities.broadcasts.lane_of``) among the ``limit``
    first due, while the batches of the other lanes send to the rest."""


class BatchResult(BaseModel):
    attempted: int = 0
    counts: BroadcastCounts = BroadcastCounts()
    stopped: Literal["paused", "cancelled"] | None = None
    """The broadcast was paused or cancelled while this batch ran: the rest of the batch was left pending."""
    next_due: datetime | None = None
    """With nothing due now: when the next pending recipient is (None: nobody is pending)."""


class FinishRequest(BaseModel):
    broadcast_id: str
    status: Literal["completed", "cancelled"]
