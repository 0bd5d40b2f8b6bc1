"""Step outcomes: what each step of a journey run did, one row per (entry, step, visit).

The rows are the journey's analytics (funnels, A/B results) and its audit trail. A row is written once per run:
a retried or replayed activity that records the same visit again changes nothing. A later run of the same entry
(a reset re-running the step) records its own attempt, and the earlier run's row is kept, marked superseded
(``superseded_at``); reports, ``parcours ops failures``, merges and erasure see only current rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from store.db import Db, transaction

# An earlier run's row of the same visit gives way to this run's (a reset re-ran the step).
_SUPERSEDE_SQL = """
UPDATE step_outcomes SET superseded_at = now()
 WHERE journey_id = $1 AND customer_id = $2 AND entry_id = $3 AND step_id = $4 AND visit = $5
   AND superseded_at IS NULL AND run_id <> $6
"""

_INSERT_SQL = """
INSERT INTO step_outcomes (journey_id, journey_version, customer_id, entry_id, step_id, visit,
                           step_type, outcome, detail, workflow_id, run_id, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (journey_id, customer_id, entry_id, step_id, visit) WHERE superseded_at IS NULL DO NOTHING
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
    """Record the outcomes: a visit this run recorded before keeps its first row; one an earlier run recorded is
    superseded by this run's. Two batched statements in one transaction."""
    rows = [
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
    ]
    async with transaction(db) as conn:
        await conn.executemany(
            _SUPERSEDE_SQL, [(o.journey_id, o.customer_id, o.entry_id, o.step_id, o.visit, o.run_id) for o in outcomes]
        )
        await conn.executemany(_INSERT_SQL, rows)


@dataclass(frozen=True)
class FailedStep:
    """The newest failed outcome of a step in a run: what ``parcours ops failures`` shows as the reason."""

    workflow_id: str
    step_id: str
    reason: str
    recorded_at: datetime


_FAILED_SQL = """
SELECT DISTINCT ON (workflow_id, step_id) workflow_id, step_id,
       coalesce(detail->>'reason', detail->>'error', outcome) AS reason, recorded_at
FROM step_outcomes
WHERE workflow_id = ANY($1::text[]) AND outcome = 'failed' AND superseded_at IS NULL
ORDER BY workflow_id, step_id, recorded_at DESC, id DESC
"""


async def failed_steps(db: Db, workflow_ids: Sequence[str]) -> dict[tuple[str, str], FailedStep]:
    """The newest failed outcome per (workflow id, step id) of these runs."""
    rows = await db.fetch(_FAILED_SQL, list(workflow_ids))
    return {
        (r["workflow_id"], r["step_id"]): FailedStep(r["workflow_id"], r["step_id"], r["reason"], r["recorded_at"])
        for r in rows
    }
