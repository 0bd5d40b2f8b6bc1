"""Inputs and outputs of the customer-value activities (pure pydantic: the refresh workflow imports this module)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class ValueSource(BaseModel):
    """Which events are orders and up to when."""

    order_event: str
    value_property: str
    as_of: datetime


class FitRequest(BaseModel):
    source: ValueSource
    horizon_days: float
    min_repeat_customers: int


class FitResult(BaseModel):
    model: dict[str, Any]
    """``measurement.clv.FittedModel``, dumped as JSON."""
    customers: int
    """Customers with at least one order up to ``as_of``."""


class BatchRequest(BaseModel):
    source: ValueSource
    model: dict[str, Any]
    refresh_id: str
    after: str | None = None
    """The last customer id of the previous batch (keyset cursor); None for the first."""
    limit: int = 500


class BatchResult(BaseModel):
    scanned: int
    written: int
    last: str | None
    """The last customer id scanned; None when there were none left."""
