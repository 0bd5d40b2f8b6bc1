"""Step outcomes: what each step of a journey run did, one row per (entry, step, visit).

The rows are the journey's analytics (funnels, A/B results) and its audit trail. A row is written once: a
retried or replayed activity that records the same visit again changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from store.db import Db

_INSERT_SQL = """
INSERT INTO step_outcomes (journey_id, journey_version, customer_id, entry_id, step_id, visit,
                           step_type, outcome, detail, workflow_id, run_id, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (journey_id, customer_id, entry_id, step_id, visit) DO NOTHING
"""


@dataclass(frozen=True)
class StepOutcome:
    """One step visit's outcome (field order is the statement's parameter order)."""

    journey_id: str
    journey_version: int
    customer_id: str
    entry_id: str
    step_id: str
    visit: int
    step_type: str
    outcome: str
    detail: dict[str, Any]
    workflow_id: str
    run_id: str
    recorded_at: datetime
    """When the step finished."""


async def record_outcomes(db: Db, outcomes: Sequence[StepOutcome]) -> None:
    """Record the outcomes; a visit recorded before keeps its first row. One round trip (a batch)."""
    await db.executemany(
        _INSERT_SQL,
        [
            (
                o.journey_id,
                o.journey_version,
                o.customer_id,
                o.entry_id,
                o.step_id,
                o.visit,
                o.step_type,
                o.outcome,
                o.detail,
                o.workflow_id,
                o.run_id,
                o.recorded_at,
            )
            for o in outcomes
        ],
    )
