"""``parcours journeys report``: the journey report as readable tables (rich)."""

from __future__ import annotations

import asyncio
from datetime import date

from rich.console import Console
from rich.table import Table
from rich.text import Text
from temporalio.client import Client

from api.journey_report import JourneyReport, UnknownVersionError, journey_report
from api.routes_reports import day_range
from api.schemas import ApiError
from cli.context import err_console, fail, open_pool
from config.settings import Settings
from store.reports import Filters
from workers.client import connect

TEMPORAL_CONNECT_SECONDS = 5.0


async def fetch_report(
    settings: Settings,
    journey_id: str,
    *,
    version: int | None,
    since: date | None,
    until: date | None,
    variant: str | None,
) -> JourneyReport:
    """The report, from the database and (if it answers) Temporal; a missing journey or version is an error."""
    try:
        start, end = day_range(since, until)
    except ApiError as exc:
        fail(exc.message)
    client: Client | None = None
    try:
        client = await asyncio.wait_for(connect(settings), timeout=TEMPORAL_CONNECT_SECONDS)
    except Exception as exc:  # the report still answers, without waiting_now
        err_console.print(f"[yellow]warning:[/] Temporal unreachable ({exc}); waiting counts unknown")
    async with open_pool(settings) as pool:
        try:
            report = await journey_report(pool, client, settings, Filters(journey_id, version, start, end, variant))
        except UnknownVersionError:
            fail(f"journey {journey_id!r} has no version {version}")
    if report is None:
        fail(f"unknown journey {journey_id!r}")
    return report


def print_report(console: Console, report: JourneyReport) -> None:
    scope = [f"version {report.version}" if report.version else "all versions"]
    if report.since or report.until:
        scope.append(f"{_day(report.since)} to {_day(report.until, end=True)}")
    if report.variant:
        scope.append(f"variant {report.variant}")
    c = report.conversions
    title = Text(report.name, style="bold")
    title.append(f" ({report.journey_id}, steps of v{report.definition_version}); " + ", ".join(scope), style="")
    console.print(title)
    console.print(
        f"Entered {report.entered} · converted {c.converted} ({_pct(c.conversion_rate)}) · revenue {c.revenue:,.2f}"
        f" · median time to convert {_duration(c.median_time_to_convert_seconds)}"
    )

    steps = Table("#", "Step", "Type", "Reached", "Waiting now", "Outcomes", title="Steps", title_justify="left")
    for position, step in enumerate(report.steps, start=1):
        outcomes = "\n".join(f"{'  ' + o.reason if o.reason else o.outcome}: {o.count}" for o in step.outcomes) or "-"
        waiting = "?" if step.waiting_now is None else str(step.waiting_now)
        steps.add_row(str(position), Text(step.step_id), step.type, str(step.reached), waiting, Text(outcomes))
    console.print(steps)
    if report.waiting_note:
        console.print(Text(report.waiting_note, style="yellow"))

    funnels = Table(
        *("Step", "Channel", "Sent", "Delivered", "Bounced", "Opened (human)", "Clicked", "Unsub."),
        *("Skipped", "Failed", "Cost"),
        title="Messages",
        title_justify="left",
    )
    for step in report.steps:
        if step.funnel is None:
            continue
        parts = step.funnel.by_channel or []
        rows = [step.funnel] if len(parts) <= 1 else [step.funnel, *parts]
        for f in rows:
            channel = f.channel or (parts[0].channel if len(parts) == 1 else "all") or "-"
            funnels.add_row(
                Text(step.step_id) if f is step.funnel else "",
                channel or "-",
                str(f.sent),
                "-" if f.delivered is None else str(f.delivered),
                str(f.bounced),
                f"{f.opened} ({f.opened_human})",
                str(f.clicked),
                str(f.unsubscribed),
                str(f.skipped),
                str(f.failed),
                f"{f.cost:,.4f}",
            )
    if funnels.row_count:
        console.print(funnels)

    if report.exits:
        exits = Table("Exit reason", "Count", title="Exits", title_justify="left")
        for line in report.exits:
            exits.add_row(Text(line.reason), str(line.count))
        console.print(exits)
    if report.arms:
        arms = Table(
            *("Split step", "Variant", "Entered", "Converted", "Rate", "Revenue"), title="Arms", title_justify="left"
        )
        for a in report.arms:
            rate, revenue = _pct(a.conversion_rate), f"{a.revenue:,.2f}"
            arms.add_row(Text(a.step_id), a.variant, str(a.entered), str(a.converted), rate, revenue)
        console.print(arms)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _day(value: object, *, end: bool = False) -> str:
    from datetime import datetime, timedelta

    if not isinstance(value, datetime):
        return "…"
    return (value - timedelta(days=1) if end else value).strftime("%Y-%m-%d")
