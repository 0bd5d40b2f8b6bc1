"""The journey page's panels (experiments, the funnel over time), the journeys list's trend sparklines, and a
journey's versions with the differences between two of them.

The experiments panel shows what ``api.experiments`` computes for ``GET /v1/journeys/{id}/experiments`` (called
as a function, not over HTTP): rates with their intervals, lifts, p-values and the verdict; nothing is computed
here but placement and wording. The funnel reads ``store.reports.daily_counts`` (the report's figures, per day).
Every route of this module declares the role it needs (``console_role``), as the API's routes do.
"""

from __future__ import annotations

import asyncio
import difflib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from api.console import charts, routes, session
from api.experiments import StepExperiment, experiments_report
from api.routes_deps import pool
from journeys.models import Journey
from store import journeys as journey_store
from store import reports

router = APIRouter(include_in_schema=False)

FUNNEL_DAYS = 30
TREND_DAYS = 14
OLDEST_SINCE_DAYS = 366


READ = Depends(routes.needs("read"))


# --- wording ------------------------------------------------------------------------------------------------------

NONE = "\N{EN DASH}"
"""What a figure that is not defined (no entrants, no comparison) reads as."""


def percent(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f} %"


def points(value: float | None) -> str:
    """A difference of rates in percentage points, signed."""
    return NONE if value is None else f"{value * 100:+.1f} points"


def p_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def signed(value: float | None, digits: int = 1) -> str:
    return NONE if value is None else f"{value:+,.{digits}f}"


def between(low: str, high: str) -> str:
    return NONE if NONE in (low, high) else f"{low} to {high}"


# --- the experiments panel ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmLine:
    name: str
    control: bool
    entered: int
    converted: int
    rate: str
    interval: str
    lift: str
    lift_relative: str
    lift_interval: str
    p_value: str
    always_valid_p: str
    probability_best: str


@dataclass(frozen=True)
class HoldoutLine:
    holdout: str
    treated: str
    incremental_conversions: str
    incremental_conversions_interval: str
    incremental_revenue: str
    incremental_revenue_interval: str


@dataclass(frozen=True)
class ExperimentView:
    step_id: str
    kind: str
    title: str
    control: str
    chart: charts.IntervalChart
    description: str
    arms: list[ArmLine]
    verdict: str
    holdout: HoldoutLine | None


def experiment_view(experiment: StepExperiment, journey: Journey) -> ExperimentView:
    r = experiment.result
    by_arm = {c.arm: c for c in r.comparisons}
    lines = []
    for arm in r.arms:
        c = by_arm.get(arm.name)
        lines.append(
            ArmLine(
                name=arm.name, control=arm.name == r.control, entered=arm.entered, converted=arm.converted,
                rate=percent(arm.conversion_rate), interval=between(percent(arm.ci_low), percent(arm.ci_high)),
                lift=points(c.lift_abs) if c else "control",
                lift_relative="" if c is None or c.lift_rel is None else f"{c.lift_rel * 100:+.1f} %",
                lift_interval=between(points(c.ci_low), points(c.ci_high)) if c else "",
                p_value=p_value(c.p_value) if c else "", always_valid_p=p_value(c.always_valid_p) if c else "",
                probability_best=f"{arm.probability_best * 100:.0f} %",
            )
        )  # fmt: skip
    chart = charts.intervals(
        [charts.IntervalRow(a.name, a.conversion_rate, a.ci_low, a.ci_high, a.name == r.control) for a in r.arms]
    )
    description = "; ".join(
        f"{line.name}{' (control)' if line.control else ''}: {line.rate}, 95% interval {line.interval}"
        for line in lines
    )
    holdout = None
    if r.holdout is not None:
        h = r.holdout
        control = next(a for a in r.arms if a.name == r.control)
        treated_rate = h.treated_converted / h.treated_entered if h.treated_entered else None
        holdout = HoldoutLine(
            holdout=f"{control.converted} of {control.entered} ({percent(control.conversion_rate)})",
            treated=f"{h.treated_converted} of {h.treated_entered} ({percent(treated_rate)})",
            incremental_conversions=signed(h.incremental_conversions),
            incremental_conversions_interval=between(
                signed(h.incremental_conversions_ci_low), signed(h.incremental_conversions_ci_high)
            ),
            incremental_revenue=signed(h.incremental_revenue, 2),
            incremental_revenue_interval=between(
                signed(h.incremental_revenue_ci_low, 2), signed(h.incremental_revenue_ci_high, 2)
            ),
        )
    if experiment.kind == "holdout":
        title = "Holdout: the control group against everyone treated"
    else:
        step = next((s for s in journey.steps if s.id == experiment.step_id), None)
        label = step.label if step is not None and step.label else experiment.step_id
        title = f"Split “{label}”"
    return ExperimentView(
        step_id=experiment.step_id, kind=experiment.kind, title=title, control=r.control, chart=chart,
        description=description, arms=lines, verdict=r.verdict, holdout=holdout,
    )  # fmt: skip


# --- the funnel over time -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunnelView:
    since: date
    until: date
    """Inclusive."""
    days: list[date]
    columns: list[charts.Series]
    chart: charts.LineChart


def _since(request: Request, today: date) -> date:
    raw = request.query_params.get("since")
    if raw is None or raw == "":
        return today - timedelta(days=FUNNEL_DAYS - 1)
    try:
        since = date.fromisoformat(raw) if len(raw) == 10 else None
    except ValueError:
        since = None
    if since is None:
        raise routes.Refused(400, "since: a day as YYYY-MM-DD")
    if since > today or since < today - timedelta(days=OLDEST_SINCE_DAYS):
        raise routes.Refused(400, f"since: a day from {OLDEST_SINCE_DAYS} days ago to today")
    return since


def _series_order(journey: Journey, seen: set[str]) -> list[str]:
    """As the journey report lists steps: the control group, the definition's steps, others, then ``$exit``."""
    ordered = ([reports.HOLDOUT_STEP] if journey.holdout is not None else []) + [s.id for s in journey.steps]
    extra = sorted(seen - set(ordered) - {"$exit", reports.ENTERED, reports.CONVERTED})
    return ordered + extra + (["$exit"] if "$exit" in seen else [])


async def funnel_view(db: Any, journey_id: str, journey: Journey, since: date, today: date) -> FunnelView:
    start = datetime.combine(since, datetime.min.time(), UTC)
    end = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    counts = await reports.daily_counts(db, reports.Filters(journey_id, None, start, end))
    days = [since + timedelta(days=i) for i in range((today - since).days + 1)]
    index = {d: i for i, d in enumerate(days)}
    values: dict[str, list[int]] = {}
    for c in counts:
        values.setdefault(c.series, [0] * len(days))[index[c.day]] += c.count
    labels = {s.id: s.label or s.id for s in journey.steps} | {reports.HOLDOUT_STEP: "Held out", "$exit": "Exited"}
    steps = _series_order(journey, set(values))
    columns = [
        charts.Series(reports.ENTERED, "Entered", values.get(reports.ENTERED, [0] * len(days))),
        *(charts.Series(s, f"Reached {labels.get(s, s)}", values.get(s, [0] * len(days))) for s in steps),
        charts.Series(reports.CONVERTED, "Converted", values.get(reports.CONVERTED, [0] * len(days))),
    ]
    return FunnelView(since, today, days, columns, charts.lines(days, columns))


async def journey_panels(request: Request, journey_id: str, journey: Journey) -> dict[str, Any]:
    """What the journey page adds below the graph: ``experiments`` and ``funnel`` (see the template
    ``journey_panels.html``)."""
    db = pool(request)
    today = datetime.now(UTC).date()
    since = _since(request, today)
    report, funnel = await asyncio.gather(
        experiments_report(db, journey_id, version=None, since=None, until=None),
        funnel_view(db, journey_id, journey, since, today),
    )
    experiments = [experiment_view(e, journey) for e in report.experiments] if report else []
    return {"experiments": experiments, "funnel": funnel}


# --- trends on the journeys list ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    values: list[int]
    spark: charts.Sparkline
    label: str


async def trends(db: Any, journey_ids: list[str]) -> dict[str, Trend]:
    """Entries per UTC day over the last ``TREND_DAYS`` days (today included), per journey."""
    today = datetime.now(UTC).date()
    first = today - timedelta(days=TREND_DAYS - 1)
    by_day = await reports.entries_by_day(db, first, today + timedelta(days=1))
    days = [first + timedelta(days=i) for i in range(TREND_DAYS)]
    out = {}
    for journey_id in journey_ids:
        mine = by_day.get(journey_id, {})
        values = [mine.get(d, 0) for d in days]
        label = (
            f"Entered per day from {first:%d %b} to {today:%d %b}: {', '.join(str(v) for v in values)}"
            f" (total {sum(values)})"
        )
        out[journey_id] = Trend(values, charts.sparkline(values), label)
    return out


# --- versions -----------------------------------------------------------------------------------------------------


def canonical_yaml(journey: Journey) -> str:
    """The definition as stored (``store.journeys.canonical``), as YAML in the language's field order."""
    return yaml.safe_dump(
        journey_store.canonical(journey), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )


@dataclass(frozen=True)
class DiffLine:
    kind: str
    """``added``, ``removed``, ``same``, ``hunk`` or ``file``."""
    text: str


def diff_lines(old: str, new: str, old_name: str, new_name: str) -> list[DiffLine]:
    out = []
    for line in difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=old_name, tofile=new_name, lineterm="", n=3
    ):
        if line.startswith(("---", "+++")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "added"
        elif line.startswith("-"):
            kind = "removed"
        else:
            kind = "same"
        out.append(DiffLine(kind, line))
    return out


def _version(raw: str | None, name: str, known: set[int], default: int) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise routes.Refused(400, f"{name}: a version number")
    if int(raw) not in known:
        raise routes.Refused(404, f"{name}: the journey has no version {raw}")
    return int(raw)


@router.get("/console/journeys/{journey_id}/versions")
async def versions_page(request: Request, journey_id: str, current: session.Session = READ) -> Response:
    journey_id = routes.journey_id_or_404(journey_id)
    db = pool(request)
    row = await journey_store.get_journey(db, journey_id)
    if row is None:
        raise routes.Refused(404, f"unknown journey '{journey_id}'")
    versions = await journey_store.list_versions(db, journey_id)
    known = {v.version for v in versions}
    latest = row.latest_version
    new = _version(request.query_params.get("to"), "to", known, latest)
    old = _version(request.query_params.get("from"), "from", known, max(1, new - 1))
    lines: list[DiffLine] = []
    if old != new:
        texts = []
        for number in (old, new):
            try:
                version = await journey_store.get_version(db, journey_id, number)
            except ValidationError:  # stored by a release whose language this one no longer reads
                raise routes.Refused(409, f"version {number} no longer reads as a journey of this release") from None
            assert version is not None
            texts.append(canonical_yaml(version))
        lines = diff_lines(texts[0], texts[1], f"version {old}", f"version {new}")
    return routes.render(
        request, current, "versions.html", title=f"Versions of {row.name}", row=row, versions=versions,
        old=old, new=new, lines=lines,
        added=sum(1 for x in lines if x.kind == "added"), removed=sum(1 for x in lines if x.kind == "removed"),
    )  # fmt: skip
