"""``parcours journeys report``, ``parcours journeys experiments`` and ``parcours attribution``: the reports as
readable tables (rich)."""

from __future__ import annotations

import asyncio
from datetime import date

from rich.console import Console
from rich.table import Table
from rich.text import Text
from temporalio.client import Client

from api.attribution_report import AttributionAnswer, attribution_answer
from api.experiments import ExperimentsReport, experiments_report
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


async def fetch_experiments(
    settings: Settings, journey_id: str, *, version: int | None, since: date | None, until: date | None
) -> ExperimentsReport:
    try:
        start, end = day_range(since, until)
    except ApiError as exc:
        fail(exc.message)
    async with open_pool(settings) as pool:
        try:
            report = await experiments_report(pool, journey_id, version=version, since=start, until=end)
        except UnknownVersionError:
            fail(f"journey {journey_id!r} has no version {version}")
    if report is None:
        fail(f"unknown journey {journey_id!r}")
    return report


def print_experiments(console: Console, report: ExperimentsReport) -> None:
    if not report.experiments:
        console.print(f"{report.journey_id}: no split step or holdout has arms yet")
    for experiment in report.experiments:
        r = experiment.result
        title = "Holdout: control group against everyone treated" if experiment.kind == "holdout" else None
        table = Table(
            *("Arm", "Entered", "Converted", "Rate", "Revenue", "Rev./entrant", "P(best)"),
            *("Lift", "95% CI", "p", "Always-valid p"),
            title=title or f"Split step {experiment.step_id} (control: {r.control})",
            title_justify="left",
        )
        by_arm = {c.arm: c for c in r.comparisons}
        for arm in r.arms:
            c = by_arm.get(arm.name)
            lift = ci = p = avp = "-"
            if c is not None:
                lift = "-" if c.lift_abs is None else f"{100 * c.lift_abs:+.1f} pts"
                if c.ci_low is not None and c.ci_high is not None:
                    ci = f"{100 * c.ci_low:+.1f} to {100 * c.ci_high:+.1f}"
                p, avp = _p(c.p_value), _p(c.always_valid_p)
            per = "-" if arm.revenue_per_entrant is None else f"{arm.revenue_per_entrant:,.2f}"
            table.add_row(
                Text(arm.name + (" (control)" if arm.name == r.control else "")), str(arm.entered),
                str(arm.converted), _pct(arm.conversion_rate), f"{arm.revenue:,.2f}", per,
                f"{arm.probability_best:.0%}", lift, ci, p, avp,
            )  # fmt: skip
        console.print(table)
        if r.holdout is not None:
            h = r.holdout.model_dump()
            extra = ", ".join(f"{k} {v:,.2f}" for k, v in h.items() if isinstance(v, float))
            console.print(Text(f"Incremental: {extra}"))
        console.print(Text(f"Verdict: {r.verdict}", style="bold"))


async def fetch_attribution(settings: Settings, **query: object) -> AttributionAnswer:
    async with open_pool(settings) as pool:
        try:
            return await attribution_answer(pool, settings, **query)  # type: ignore[arg-type]
        except ApiError as exc:
            fail(exc.message)


def print_attribution(console: Console, answer: AttributionAnswer) -> None:
    r = answer.report
    console.print(
        Text(
            f"{answer.event} (value: {answer.value}) · model {r.model} · window {answer.window}"
            + (" · clicked messages only" if answer.clicked_only else "")
        )
    )
    console.print(
        f"Conversions {r.conversions} · revenue {r.revenue:,.2f} · unattributed {r.unattributed_conversions}"
        f" ({r.unattributed_revenue:,.2f})"
    )
    table = Table(
        *("Journey", "Step", "Channel", "Touches", "Conversions", "Revenue", "Cost", "Return on cost"),
        title="Attributed",
        title_justify="left",
    )
    for row in sorted(r.rows, key=lambda x: -x.attributed_revenue):
        roc = "-" if row.return_on_cost is None else f"{row.return_on_cost:,.2f}x"
        table.add_row(
            Text(row.journey), Text(row.step), row.channel, str(row.touches), f"{row.attributed_conversions:,.2f}",
            f"{row.attributed_revenue:,.2f}", f"{row.cost:,.4f}", roc,
        )  # fmt: skip
    console.print(table)


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


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
