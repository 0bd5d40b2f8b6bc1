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
    from orchestration.ops import Failure, ReplayResult

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
