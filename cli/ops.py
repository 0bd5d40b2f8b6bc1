"""``parcours ops``: what an operator does to runs in production: find the broken ones, replay before deploying.

Temporal is reached through ``orchestration.ops``; the database (for a failed step's reason) as every command does.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.context import console, err_console, fail, open_client, open_pool, run, setup_logging
from config.settings import Settings

if TYPE_CHECKING:
    from orchestration.ops import BatchReset, Failure, ReplayResult, ResetPlan

ops_app = typer.Typer(help="Operate journey runs: find failures, replay histories.", no_args_is_help=True)

_SINCE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None) -> datetime | None:
    """``30m``, ``12h``, ``1d``, ``2w``: that long ago."""
    if text is None:
        return None
    match = _SINCE.match(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r}: use a number and m, h, d or w (e.g. 1d)", param_hint="'--since'")
    return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})


def ui_url(settings: Settings) -> str:
    return settings.temporal_ui_url or f"http://127.0.0.1:{settings.temporal_ui_port}"


def _settings() -> Settings:
    from cli.main import load_settings

    settings = load_settings()
    setup_logging(settings)
    return settings


@ops_app.command("failures")
def failures(
    journey: Annotated[str | None, typer.Option("--journey", "-j", help="Only this journey's runs.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Runs still running or closed this long ago at most (1d, 12h).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many runs of each kind.")] = 500,
) -> None:
    """Runs with a failed step, runs whose workflow task keeps failing, and failed runs; exit 1 when any."""
    from orchestration.ops import FailureSearch

    settings = _settings()
    after = parse_since(since)

    async def main() -> tuple[list[Failure], list[str]]:
        client = await open_client(settings)
        async with open_pool(settings) as pool:
            search = FailureSearch(client, ui_url(settings), db=pool, limit=limit)
            return await search.find(journey, after), search.notes

    found, notes = run(main())
    for note in notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    if not found:
        console.print("No failures.")
        return
    table = Table(
        "Kind", "Journey", "Customer", "Step", "Reason", "When", "Run", title="Failures", title_justify="left"
    )
    for f in found:
        when = f.when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if f.when else ""
        table.add_row(f.kind, f.journey_id or "-", f.customer_id or "-", f.step or "-", f.reason, when, f.link)
    console.print(table)
    for f in found:  # one per line too: greppable when piped
        console.print(
            f"{f.kind} {f.workflow_id} step={f.step or '-'}: {f.reason} {f.link}", highlight=False, soft_wrap=True
        )
    raise typer.Exit(1)


@ops_app.command("replay")
def replay(
    query: Annotated[
        str | None,
        typer.Option("--query", "-q", help="A visibility query (default: every journey run, running and closed)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many runs.")] = 100,
    save: Annotated[
        Path | None, typer.Option("--save", help="Also write each history here (the replay corpus format).")
    ] = None,
) -> None:
    """Replay the histories of matching runs against the workflow code on disk; exit 1 if any diverges."""
    from contracts import search_attributes as sa
    from orchestration.ops import replay as replay_runs
    from workers import worker

    settings = _settings()

    async def main() -> list[ReplayResult]:
        client = await open_client(settings)
        chosen = query or f"{sa.JOURNEY_ID.name} IS NOT NULL"
        return await replay_runs(client, chosen, worker.WORKFLOWS, limit=limit, save_to=save)

    results = run(main())
    broken = [r for r in results if r.error]
    for r in broken:
        console.print(f"[bold red]diverges[/] {r.workflow_id} ({r.run_id}): {r.error}", highlight=False, soft_wrap=True)
    saved = f"; histories saved in {save}" if save else ""
    console.print(f"{len(results)} run(s) replayed, {len(broken)} diverge{saved}.")
    if broken:
        raise typer.Exit(1)


def actor() -> str:
    """Who runs the command, for the operators' log."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@ops_app.command("exit")
def exit_run(
    journey: Annotated[str, typer.Argument(help="Journey id.")],
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded as the run's exit reason and logged.")],
) -> None:
    """Take one customer out of a journey now, with a reason (as POST /v1/journeys/{id}/runs/{customer}/exit)."""
    from orchestration.ops import exit_customer_run
    from store import ops as ops_store
    from store.identity import resolve_customer

    settings = _settings()
    if not reason.strip():
        raise typer.BadParameter("say why (it is recorded)", param_hint="'--reason'")

    async def main() -> list[str]:
        client = await open_client(settings)
        async with open_pool(settings) as pool:
            customer_id = await resolve_customer(pool, customer)
            asked = await exit_customer_run(client, journey, customer_id, reason)
            if not asked:
                fail(f"customer {customer!r} is not in journey {journey!r} now")
            detail = {"journey_id": journey, "customer_id": customer_id}
            await ops_store.record_action(pool, "exit", actor(), reason, asked[0], detail)
            return asked

    for workflow_id in run(main()):
        console.print(f"{workflow_id}: asked to exit ({reason})", highlight=False)


@ops_app.command("reset")
def reset(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="last-task, first-task, or step STEP: the workflow task the run re-runs from (with step: the "
            "one just before the step STEP started, so the step runs again).",
        ),
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why: given to Temporal and logged with who did it.")],
    step: Annotated[str | None, typer.Argument(help="With --to step: the step's id.", show_default=False)] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Reset every run this query lists.")] = None,
    workflow_id: Annotated[str | None, typer.Option("--workflow-id", "-w", help="Reset this run.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="With --query: at most this many runs.")] = 100,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be reset, reset nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    wait: Annotated[
        float, typer.Option("--wait", help="With --query: wait this many seconds at most for the batch job.")
    ] = 300.0,
) -> None:
    """Reset runs to their last or first workflow task or to just before a step: list them and the event each goes
    back to, then do it."""
    import uuid

    from orchestration.ops import RESET_POINTS, plan_resets, reset_run
    from store import ops as ops_store

    if (query is None) == (workflow_id is None):
        raise typer.BadParameter("give exactly one of --query and --workflow-id", param_hint="'--query'")
    if to not in RESET_POINTS:
        raise typer.BadParameter(f"{to!r}: use last-task, first-task or step STEP", param_hint="'--to'")
    if to == "step" and not step:
        raise typer.BadParameter("name the step: --to step STEP", param_hint="'--to'")
    if to != "step" and step:
        raise typer.BadParameter(f"{step!r}: a step is named only with --to step", param_hint="'STEP'")
    if not reason.strip():
        raise typer.BadParameter("say why (it is recorded)", param_hint="'--reason'")
    settings = _settings()

    async def plan() -> list[ResetPlan]:
        client = await open_client(settings)
        return await plan_resets(client, to, query=query, workflow_id=workflow_id, limit=limit, step=step)

    plans = run(plan())
    doable = [p for p in plans if p.event_id is not None]
    point = f"step {step}" if step else to
    for p in plans:
        where = f"to event {p.event_id} ({point})" if p.event_id is not None else f"cannot: {p.why}"
        console.print(f"{p.workflow_id} ({p.run_id}, {p.status}): {where}", highlight=False, soft_wrap=True)
    if dry_run or not doable:
        console.print(f"{len(doable)} run(s) would be reset{' (dry run)' if dry_run else ''}.")
        return
    if not yes:
        typer.confirm(f"Reset {len(doable)} run(s)?", abort=True)
    who = actor()
    if query is not None and to != "step":
        _batch_reset(settings, query, doable, to, reason, who, wait)
        return

    async def main() -> list[tuple[ResetPlan, str]]:
        client = await open_client(settings)
        done = []
        async with open_pool(settings) as pool:
            for p in doable:
                new_run = await reset_run(client, p, f"{reason} ({who})", str(uuid.uuid4()))
                detail = {"run_id": p.run_id, "new_run_id": new_run, "event_id": p.event_id, "to": point}
                await ops_store.record_action(pool, "reset", who, reason, p.workflow_id, detail)
                done.append((p, new_run))
        return done

    for p, new_run in run(main()):
        console.print(f"{p.workflow_id}: reset to event {p.event_id}, new run {new_run}", highlight=False)


def _batch_reset(
    settings: Settings, query: str, plans: list[ResetPlan], to: str, reason: str, who: str, wait: float
) -> None:
    """Reset the planned runs in one Temporal batch job, log it (job id and query), wait for it, print its result;
    exit 1 unless every run was reset."""
    import uuid

    from orchestration.ops import start_batch_reset, wait_for_batch
    from store import ops as ops_store

    job_id = f"parcours-reset-{uuid.uuid4()}"

    async def main() -> BatchReset:
        client = await open_client(settings)
        async with open_pool(settings) as pool:
            await start_batch_reset(client, plans, to, f"{reason} ({who})", job_id)
            detail = {"job_id": job_id, "to": to, "runs": [[p.workflow_id, p.run_id] for p in plans]}
            await ops_store.record_action(pool, "reset", who, reason, query, detail)
        console.print(f"batch job {job_id} started for {len(plans)} run(s); waiting…", highlight=False)
        return await wait_for_batch(client, job_id, timeout=wait)

    result = run(main())
    console.print(
        f"batch job {result.job_id}: {result.state}, {result.done} of {result.total} run(s) reset,"
        f" {result.failed} failed.",
        highlight=False,
        soft_wrap=True,
    )
    if result.state != "completed" or result.failed:
        raise typer.Exit(1)
