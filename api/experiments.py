"""A journey's experiments: every split step and the holdout, read out by ``measurement.experiments.analyze``.

Shared by ``GET /v1/journeys/{id}/experiments`` and ``parcours journeys experiments``. A split step's arms are its
variants (in the definition's order, then variants of other versions), plus the holdout arm when the journey has
one, which is then the control (else the first variant is). The holdout's own experiment sets the control group
against everyone treated (``store.reports.treated_arm``). What each figure means is in README, "Measurement".
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from api.journey_report import UnknownVersionError
from journeys.models import Journey, SplitStep
from measurement.arms import ArmInput
from measurement.experiments import ExperimentReport, analyze
from store import journeys as journey_store
from store import reports


class StepExperiment(BaseModel):
    step_id: str
    """The split step, or ``$holdout`` for the control group against everyone treated."""
    kind: Literal["split", "holdout"]
    result: ExperimentReport


class ExperimentsReport(BaseModel):
    journey_id: str
    version: int | None
    since: datetime | None
    until: datetime | None
    experiments: list[StepExperiment]
    generated_at: datetime


async def experiments_report(
    db: Any, journey_id: str, *, version: int | None, since: datetime | None, until: datetime | None
) -> ExperimentsReport | None:
    """None when there is no such journey; ``UnknownVersionError`` (api.journey_report) for a missing version."""
    row = await journey_store.get_journey(db, journey_id)
    if row is None:
        return None
    journey = await journey_store.get_version(db, journey_id, version or row.latest_version)
    if journey is None:
        raise UnknownVersionError(version)
    arms, treated = await asyncio.gather(
        reports.experiment_arms(db, journey_id, version=version, since=since, until=until),
        reports.treated_arm(db, journey_id, version=version, since=since, until=until),
    )
    return ExperimentsReport(
        journey_id=journey_id,
        version=version,
        since=since,
        until=until,
        experiments=experiments(journey, arms, treated),
        generated_at=datetime.now(UTC),
    )


def experiments(
    journey: Journey, arms: list[reports.ExperimentArm], treated: reports.ExperimentArm
) -> list[StepExperiment]:
    """One read-out per split step with arms (definition order first), then the holdout's."""
    holdout = next((a for a in arms if a.step_id == reports.HOLDOUT_STEP), None)
    control = [_input(holdout, holdout=True)] if holdout else []
    order = [s.id for s in journey.steps if isinstance(s, SplitStep)]
    rank = {step_id: position for position, step_id in enumerate(order)}
    steps = sorted({a.step_id for a in arms} - {reports.HOLDOUT_STEP}, key=lambda s: (rank.get(s, len(rank)), s))
    out = []
    for step_id in steps:
        definition = next((s for s in journey.steps if s.id == step_id and isinstance(s, SplitStep)), None)
        names = [v.name for v in definition.variants] if definition else []
        place = {name: position for position, name in enumerate(names)}
        mine = sorted(
            (a for a in arms if a.step_id == step_id), key=lambda a: (place.get(a.variant, len(place)), a.variant)
        )
        variants = [_input(a) for a in mine if a.variant != reports.HOLDOUT]
        out.append(StepExperiment(step_id=step_id, kind="split", result=analyze([*control, *variants])))
    if holdout is not None:
        result = analyze([_input(holdout, holdout=True), _input(treated)])
        out.append(StepExperiment(step_id=reports.HOLDOUT_STEP, kind="holdout", result=result))
    return out


def _input(arm: reports.ExperimentArm, *, holdout: bool = False) -> ArmInput:
    return ArmInput(
        name=arm.variant, entered=arm.entered, converted=arm.converted, revenue=arm.revenue, holdout=holdout
    )


CSV_COLUMNS = (
    "step_id",
    "kind",
    "arm",
    "control",
    "entered",
    "converted",
    "conversion_rate",
    "revenue",
    "revenue_per_entrant",
    "probability_best",
    "lift_abs",
    "lift_rel",
    "ci_low",
    "ci_high",
    "p_value",
    "always_valid_p",
    "n_per_arm_needed",
    "verdict",
)
"""One row per experiment and arm; the comparison columns are empty on the control's row."""


def experiments_csv(report: ExperimentsReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for experiment in report.experiments:
        r = experiment.result
        by_arm = {c.arm: c for c in r.comparisons}
        for arm in r.arms:
            c = by_arm.get(arm.name)
            comparison = (
                [c.lift_abs, c.lift_rel, c.ci_low, c.ci_high, c.p_value, c.always_valid_p, c.n_per_arm_needed]
                if c
                else [None] * 7
            )
            row = [
                experiment.step_id, experiment.kind, arm.name, r.control, arm.entered, arm.converted,
                arm.conversion_rate, arm.revenue, arm.revenue_per_entrant, arm.probability_best, *comparison,
                r.verdict,
            ]  # fmt: skip
            writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()
