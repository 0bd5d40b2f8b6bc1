"""Reports: a journey's funnel (JSON, or CSV with ``Accept: text/csv``) and channel KPIs across journeys.

Dates are whole UTC days: ``since`` from its first instant, ``until`` to its last (both included).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query, Request, Response
from temporalio.client import Client

from api.attribution_report import AttributionAnswer, attribution_answer, attribution_csv
from api.experiments import ExperimentsReport, experiments_csv, experiments_report
from api.journey_report import (
    ChannelReport,
    JourneyReport,
    UnknownVersionError,
    channel_report,
    journey_report,
)
from api.routes_deps import READ, pool, settings, temporal
from api.routes_journeys import JourneyPath
from api.schemas import ApiError
from config.settings import Settings
from measurement.attribution import MODELS
from store.reports import Filters

router = APIRouter(tags=["reports"])

Pool = Annotated[asyncpg.Pool, Depends(pool)]
Temporal = Annotated[Client, Depends(temporal)]
AppSettings = Annotated[Settings, Depends(settings)]
Since = Annotated[date | None, Query(description="First day (UTC) included, YYYY-MM-DD")]
Until = Annotated[date | None, Query(description="Last day (UTC) included, YYYY-MM-DD")]

CSV_COLUMNS = (
    "position",
    "step_id",
    "step_type",
    "reached",
    "waiting_now",
    "outcome",
    "reason",
    "value",
    "sent",
    "delivered",
    "bounced",
    "opened",
    "opened_human",
    "clicked",
    "unsubscribed",
    "cost",
)
"""One row per step and outcome (and reason). Step figures repeat on each of the step's rows; the send funnel
columns are empty for other steps. Rows with step_id ``$journey`` carry the journey's totals (outcome ``entered``,
``converted``, ``revenue``, ``median_time_to_convert_seconds``) in ``value``."""


def day_range(since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """``[since 00:00 UTC, the day after until 00:00 UTC)``; 422 when until is before since."""
    if since is not None and until is not None and until < since:
        raise ApiError(422, f"until ({until}) is before since ({since})", field="until")
    start = datetime.combine(since, time(0), UTC) if since else None
    end = datetime.combine(until + timedelta(days=1), time(0), UTC) if until else None
    return start, end


@router.get(
    "/v1/journeys/{journey_id}/report",
    dependencies=[READ],
    response_model=JourneyReport,
    responses={200: {"content": {"text/csv": {}}}, 404: {"description": "Unknown journey or version"}},
)
async def get_journey_report(
    journey_id: JourneyPath,
    request: Request,
    db: Pool,
    client: Temporal,
    config: AppSettings,
    version: Annotated[int | None, Query(ge=1, le=2_147_483_647, description="Only this version")] = None,
    since: Since = None,
    until: Until = None,
    variant: Annotated[
        str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="Entries that took this variant")
    ] = None,
) -> Any:
    """Entries, every step's outcomes and messages, conversions, exits and experiment arms. See README, "Reports"."""
    start, end = day_range(since, until)
    filters = Filters(journey_id, version, start, end, variant)
    try:
        report = await journey_report(db, client, config, filters)
    except UnknownVersionError:
        raise ApiError(404, f"journey '{journey_id}' has no version {version}", field="version") from None
    if report is None:
        raise ApiError(404, f"unknown journey '{journey_id}'", field="journey_id")
    if "text/csv" in request.headers.get("accept", ""):
        filename = f"{journey_id}-report.csv"
        return Response(
            report_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return report


@router.get(
    "/v1/journeys/{journey_id}/experiments",
    dependencies=[READ],
    response_model=ExperimentsReport,
    responses={200: {"content": {"text/csv": {}}}, 404: {"description": "Unknown journey or version"}},
)
async def get_journey_experiments(
    journey_id: JourneyPath,
    request: Request,
    db: Pool,
    version: Annotated[int | None, Query(ge=1, le=2_147_483_647, description="Only this version")] = None,
    since: Since = None,
    until: Until = None,
) -> Any:
    """Every split step and the holdout: arms, comparisons with the control, tests, verdict (README, "Measurement")."""
    start, end = day_range(since, until)
    try:
        report = await experiments_report(db, journey_id, version=version, since=start, until=end)
    except UnknownVersionError:
        raise ApiError(404, f"journey '{journey_id}' has no version {version}", field="version") from None
    if report is None:
        raise ApiError(404, f"unknown journey '{journey_id}'", field="journey_id")
    if "text/csv" in request.headers.get("accept", ""):
        return Response(
            experiments_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{journey_id}-experiments.csv"'},
        )
    return report


@router.get(
    "/v1/attribution",
    dependencies=[READ],
    response_model=AttributionAnswer,
    responses={200: {"content": {"text/csv": {}}}},
)
async def get_attribution(
    request: Request,
    db: Pool,
    config: AppSettings,
    event: Annotated[str, Query(min_length=1, max_length=200, description="Conversion event name")],
    value: Annotated[str, Query(min_length=1, max_length=200, description="The event property holding its value")],
    model: Annotated[str, Query(description=f"One of {', '.join(MODELS)}")] = "last",
    window: Annotated[str, Query(description="Lookback before each conversion, e.g. 7d")] = "7d",
    half_life: Annotated[str, Query(description="time_decay only: the age at which a touch counts half")] = "7d",
    clicked_only: Annotated[bool, Query(description="Credit only messages the customer clicked")] = False,
    since: Since = None,
    until: Until = None,
) -> Any:
    """Conversions (events with a value) credited to the messages sent before them, per journey, step and
    channel, with return on channel cost (README, "Measurement")."""
    answer = await attribution_answer(
        db, config, event=event, value=value, model=model, window=window, half_life=half_life,
        clicked_only=clicked_only, since=since, until=until,
    )  # fmt: skip
    if "text/csv" in request.headers.get("accept", ""):
        return Response(
            attribution_csv(answer.report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="attribution-{model}.csv"'},
        )
    return answer


@router.get("/v1/reports/channels", dependencies=[READ], response_model=ChannelReport)
async def get_channel_report(db: Pool, config: AppSettings, since: Since = None, until: Until = None) -> Any:
    """Per channel across journeys: volume, engagement rates, conversions (last touch), cost per conversion."""
    start, end = day_range(since, until)
    return await channel_report(db, config, Filters(since=start, until=end))


def report_csv(report: JourneyReport) -> str:
    """The report as the flat table of ``CSV_COLUMNS``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    totals = report.conversions
    for outcome, value in (
        ("entered", report.entered),
        ("converted", totals.converted),
        ("revenue", totals.revenue),
        ("median_time_to_convert_seconds", totals.median_time_to_convert_seconds),
    ):
        writer.writerow([0, "$journey", "", "", "", outcome, "", _cell(value), *[""] * 8])
    for position, step in enumerate(report.steps, start=1):
        f = step.funnel
        funnel = (
            [f.sent, f.delivered, f.bounced, f.opened, f.opened_human, f.clicked, f.unsubscribed, round(f.cost, 6)]
            if f
            else [None] * 8
        )
        head = [position, step.step_id, step.type, step.reached, step.waiting_now]
        lines: list[tuple[str | None, str | None, int]] = [(o.outcome, o.reason, o.count) for o in step.outcomes]
        for name, reason, count in lines or [(None, None, 0)]:
            writer.writerow([_cell(v) for v in (*head, name, reason, count, *funnel)])
    return out.getvalue()


def _cell(value: Any) -> Any:
    return "" if value is None else value
