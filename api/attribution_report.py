"""Attribution across journeys: conversions (``store.attribution``) credited to the messages sent before them by
``measurement.attribution``, with each message's cost from ``PARCOURS_CHANNEL_COSTS``.

Shared by ``GET /v1/attribution`` and ``parcours attribution``. Caveats in README, "Measurement".
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from pydantic import BaseModel

from api.schemas import ApiError
from config.settings import Settings
from journeys.durations import format_duration, parse_duration
from measurement import attribution
from store import attribution as attribution_store

MAX_WINDOW = timedelta(days=366)


class AttributionAnswer(BaseModel):
    event: str
    value: str
    window: str
    half_life: str | None
    """Only for ``time_decay``."""
    clicked_only: bool
    since: datetime | None
    until: datetime | None
    report: attribution.AttributionReport
    generated_at: datetime


def _duration(text: str, field: str) -> timedelta:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise ApiError(422, f"{field}: {exc}", field=field) from None
    if value > MAX_WINDOW:
        raise ApiError(422, f"{field}: at most {MAX_WINDOW.days} days", field=field)
    return value


async def attribution_answer(
    db: Any,
    settings: Settings,
    *,
    event: str,
    value: str,
    model: str,
    window: str,
    half_life: str,
    clicked_only: bool,
    since: date | None,
    until: date | None,
) -> AttributionAnswer:
    """The answer of ``GET /v1/attribution``; ``ApiError`` 422 naming the field for a bad model, window or dates.

    ``since``/``until`` are whole UTC days (both included) selecting conversions by when they occurred.
    """
    if not event.strip():
        raise ApiError(422, "event: the conversion event's name is required", field="event")
    if not value.strip():
        raise ApiError(422, "value: the property holding the conversion's value is required", field="value")
    if model not in attribution.MODELS:
        raise ApiError(422, f"model: must be one of {', '.join(attribution.MODELS)}", field="model")
    lookback, decay = _duration(window, "window"), _duration(half_life, "half_life")
    if since is not None and until is not None and until < since:
        raise ApiError(422, f"until ({until}) is before since ({since})", field="until")
    start = datetime.combine(since, time(0), UTC) if since else None
    end = datetime.combine(until + timedelta(days=1), time(0), UTC) if until else None
    report = await attribution_report(
        db, settings, event=event, value=value, model=cast(attribution.Model, model), window=lookback,
        half_life=decay, clicked_only=clicked_only, since=start, until=end,
    )  # fmt: skip
    return AttributionAnswer(
        event=event, value=value, window=format_duration(lookback),
        half_life=format_duration(decay) if model == "time_decay" else None, clicked_only=clicked_only,
        since=start, until=end, report=report, generated_at=datetime.now(UTC),
    )  # fmt: skip


async def attribution_report(
    db: Any,
    settings: Settings,
    *,
    event: str,
    value: str,
    model: attribution.Model,
    window: timedelta,
    half_life: timedelta,
    clicked_only: bool,
    since: datetime | None,
    until: datetime | None,
) -> attribution.AttributionReport:
    conversions, touches = await asyncio.gather(
        attribution_store.conversions(db, event, value, since=since, until=until),
        attribution_store.touches(db, event, value, window, since=since, until=until),
    )
    costs = settings.channel_costs
    touches["cost"] = touches["channel"].map(costs).fillna(0.0).astype(float)
    # The crediting is CPU-bound (numpy): off the event loop, so other requests go on meanwhile.
    return await asyncio.to_thread(attribution.report, conversions, touches, model, window, half_life, clicked_only)


CSV_COLUMNS = (
    "journey",
    "step",
    "channel",
    "touches",
    "attributed_conversions",
    "attributed_revenue",
    "cost",
    "return_on_cost",
)
"""One row per journey, step and channel, then one row ``$unattributed`` (conversions with no touch in window)."""


def attribution_csv(report: attribution.AttributionReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in report.rows:
        row = [r.journey, r.step, r.channel, r.touches, r.attributed_conversions, r.attributed_revenue, r.cost]
        writer.writerow([*row, "" if r.return_on_cost is None else r.return_on_cost])
    writer.writerow(["$unattributed", "", "", 0, report.unattributed_conversions, report.unattributed_revenue, 0, ""])
    return out.getvalue()
