"""The ``parcours`` command.

``parcours dev`` runs the whole stack; the other commands talk to a running one (see ``cli.context`` for how they
find the database and Temporal). Every error is one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from api.publishing import Checked, check_file, publish_journey
from api.routes_deps import validation_field
from api.schemas import EventIn, email_address
from cli.broadcasts import broadcasts_app, journeys_preview, journeys_test_send
from cli.context import CliError, console, database_url, err_console, fail, open_client, open_pool, run, setup_logging
from cli.ops import ops_app
from config.settings import Settings, unsafe_settings
from journeys.values import InputError, InputLimits, limits_from, loads_json
from workers.client import connect

if TYPE_CHECKING:
    from store.journeys import JourneyRow

app = typer.Typer(
    help="Parcours: durable customer journeys on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
journeys_app = typer.Typer(help="Publish and list journeys.", no_args_is_help=True)
events_app = typer.Typer(help="Send behaviour events.", no_args_is_help=True)
customers_app = typer.Typer(help="Look at customers.", no_args_is_help=True)
app.add_typer(journeys_app, name="journeys")
app.add_typer(events_app, name="events")
app.add_typer(customers_app, name="customers")
app.add_typer(ops_app, name="ops")
app.add_typer(broadcasts_app, name="broadcasts")
journeys_app.command("preview")(journeys_preview)
journeys_app.command("test-send")(journeys_test_send)

PROGRESS_FROM_FILES = 5
"""Publishing this many files or more shows a progress bar."""


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        err_console.print(f"[bold red]error:[/] invalid setting {where} (PARCOURS_{where.upper()}): {error['msg']}")
        raise typer.Exit(2) from None


def refuse_unsafe(settings: Settings) -> None:
    """Production processes stop here, one line per setting, when a secret is unset or public (the dev values)."""
    problems = unsafe_settings(settings)
    if problems:
        for problem in problems:
            err_console.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
        err_console.print("(parcours dev runs with development values; parcours api and worker need your own)")
        raise typer.Exit(2)


def _tracing(settings: Settings, service: str, *, only_if_set: bool = False) -> None:
    from config.tracing import configure_tracing

    if only_if_set and "PARCOURS_OTEL_EXPORTER" not in os.environ:
        return  # spans on the console drown the dev terminal; ask for them explicitly
    configure_tracing(service, settings.otel_exporter)


# The stack and its processes


@app.command()
def dev(
    demo: Annotated[bool, typer.Option("--demo", help="Create demo customers and keep sending them events.")] = False,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where PostgreSQL and Temporal keep their files.")
    ] = None,
) -> None:
    """Run Temporal (with its UI), PostgreSQL, the worker and the API in one process. Ctrl-C stops it all."""
    from devstack.console import StackError
    from devstack.stack import run_dev

    settings = load_settings(data_dir=data_dir)
    setup_logging(settings)
    _tracing(settings, "parcours-dev", only_if_set=True)

    async def main() -> int:
        try:
            return await run_dev(settings, demo=demo)
        except StackError as exc:
            fail(str(exc))

    code = run(main())
    raise typer.Exit(code)


@app.command()
def worker() -> None:
    """Run a worker against the configured Temporal and database until SIGINT/SIGTERM."""
    from workers.process import serve

    settings = load_settings()
    refuse_unsafe(settings)
    setup_logging(settings, console_default=False)
    _tracing(settings, "parcours-worker")

    async def main() -> None:
        url = database_url(settings)
        await open_client(settings)  # a clear error now rather than a retry loop later
        await serve(settings, url)

    run(main())


@app.command()
def api() -> None:
    """Serve the HTTP API on api_host:api_port until SIGINT/SIGTERM."""
    from api.server import ListenError, serve_api

    settings = load_settings()
    refuse_unsafe(settings)
    setup_logging(settings, console_default=False)
    _tracing(settings, "parcours-api")

    async def main() -> None:
        client = await open_client(settings)
        async with open_pool(settings) as pool:
            try:
                await serve_api(settings, pool, client)
            except ListenError as exc:
                fail(str(exc))

    run(main())


@app.command()
def migrate() -> None:
    """Apply the database migrations that are not applied yet."""
    from store.migrate import MigrationError
    from store.migrate import migrate as apply

    settings = load_settings()
    setup_logging(settings)

    async def main() -> list[str]:
        url = database_url(settings)
        try:
            return await apply(url)
        except MigrationError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot connect to PostgreSQL: {exc}")

    applied = run(main())
    console.print(f"Applied {', '.join(applied)}." if applied else "The schema is up to date.")


# Journeys


def _print_issues(checked: Checked) -> None:
    table = Table(title=f"{checked.path}: {len(checked.issues)} problem(s)", title_justify="left", show_lines=False)
    table.add_column("Step", style="cyan")
    table.add_column("Field", style="magenta")
    table.add_column("Problem")
    for issue in checked.issues:
        step = issue.step or (issue.location if issue.location.startswith("steps[") else "-")
        table.add_row(step, issue.field or "-", issue.message)
    err_console.print(table)
    for issue in checked.issues:  # also plain, one per line: greppable and readable when piped
        err_console.print(f"{checked.path}: {issue.location}: {issue.message}", highlight=False, soft_wrap=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console)


@journeys_app.command("publish")
def journeys_publish(
    files: Annotated[list[Path], typer.Argument(help="Journey files (YAML or JSON).")],
    check: Annotated[bool, typer.Option("--check", help="Validate only; publish nothing.")] = False,
) -> None:
    """Validate journey files and publish each as a new version (an unchanged one keeps its version).

    If any file is invalid, nothing is published: every problem is listed by step and field, exit code 1.
    """
    settings = load_settings()
    setup_logging(settings)
    many = len(files) >= PROGRESS_FROM_FILES
    checked: list[Checked] = []
    if many:
        with _progress() as progress:
            task = progress.add_task("Validating", total=len(files))
            for path in files:
                checked.append(check_file(path, settings, limits_from(settings)))
                progress.advance(task)
    else:
        checked = [check_file(path, settings, limits_from(settings)) for path in files]
    invalid = [c for c in checked if c.issues]
    for c in invalid:
        _print_issues(c)
    if invalid:
        total = sum(len(c.issues) for c in invalid)
        err_console.print(f"[bold red]error:[/] {len(invalid)} invalid file(s), {total} problem(s); nothing published")
        raise typer.Exit(1)
    if check:
        console.print(f"{len(checked)} valid journey file(s).")
        return

    async def main() -> list[tuple[Checked, int, bool]]:
        done = []
        client = None
        if any(c.journey is not None and c.journey.entry.segment is not None for c in checked):
            # A segment journey's schedule lives in Temporal: without it, the API creates it on the next
            # publish, pause or resume.
            try:
                client = await asyncio.wait_for(connect(settings), timeout=5)
            except Exception as exc:
                err_console.print(f"[yellow]warning:[/] Temporal unreachable ({exc}); segment schedules not updated")
        async with open_pool(settings) as pool:
            progress = _progress() if many else None
            task = progress.add_task("Publishing", total=len(checked)) if progress else None
            if progress:
                progress.start()
            try:
                for c in checked:
                    assert c.journey is not None
                    version, created = await publish_journey(pool, c.journey, client=client, settings=settings)
                    done.append((c, version, created))
                    if progress and task is not None:
                        progress.advance(task)
            finally:
                if progress:
                    progress.stop()
        return done

    for c, version, created in run(main()):
        assert c.journey is not None
        state = "[green]published[/]" if created else "[dim]unchanged[/]"
        console.print(f"{c.journey.id} v{version} {state} ({c.path})")


@journeys_app.command("list")
def journeys_list() -> None:
    """The published journeys, their status and latest version."""
    settings = load_settings()
    setup_logging(settings)

    async def main() -> list[JourneyRow]:
        from store.journeys import list_journeys

        async with open_pool(settings) as pool:
            return await list_journeys(pool)

    rows = run(main())
    if not rows:
        console.print("No journeys published yet: parcours journeys publish FILE")
        return
    table = Table("Id", "Name", "Status", "Version", "Trigger", "Updated")
    for row in rows:
        table.add_row(
            row.id,
            row.name,
            row.status,
            str(row.latest_version),
            row.trigger_event,
            _when(row.updated_at),
        )
    console.print(table)


@journeys_app.command("report")
def journeys_report(
    journey_id: Annotated[str, typer.Argument(help="Journey id.")],
    version: Annotated[int | None, typer.Option("--version", min=1, help="Only this version.")] = None,
    since: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First day (UTC) included.")] = None,
    until: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last day (UTC) included.")] = None,
    variant: Annotated[str | None, typer.Option(help="Only entries that took this split variant (or holdout).")] = None,
) -> None:
    """Entries, each step's outcomes and messages, conversions, exits and experiment arms (README, "Reports")."""
    from cli.reporting import fetch_report, print_report

    settings = load_settings()
    setup_logging(settings)
    report = run(
        fetch_report(
            settings,
            journey_id,
            version=version,
            since=since.date() if since else None,
            until=until.date() if until else None,
            variant=variant,
        )
    )
    print_report(console, report)


@journeys_app.command("experiments")
def journeys_experiments(
    journey_id: Annotated[str, typer.Argument(help="Journey id.")],
    version: Annotated[int | None, typer.Option("--version", min=1, help="Only this version.")] = None,
    since: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First day (UTC) included.")] = None,
    until: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last day (UTC) included.")] = None,
) -> None:
    """Every split step and the holdout: arms, lift against the control, tests and the verdict (README,
    "Measurement")."""
    from cli.reporting import fetch_experiments, print_experiments

    settings = load_settings()
    setup_logging(settings)
    day = {"since": since.date() if since else None, "until": until.date() if until else None}
    print_experiments(console, run(fetch_experiments(settings, journey_id, version=version, **day)))


@app.command("attribution")
def attribution_command(
    event: Annotated[str, typer.Option("--event", help="Conversion event name, e.g. order_placed.")],
    value: Annotated[str, typer.Option("--value", help="The event property holding its value.")] = "total",
    model: Annotated[str, typer.Option(help="first, last, linear, time_decay, position or data_driven.")] = "last",
    window: Annotated[str, typer.Option(help="Lookback before each conversion, e.g. 7d.")] = "7d",
    half_life: Annotated[str, typer.Option("--half-life", help="time_decay: a touch this old counts half.")] = "7d",
    clicked_only: Annotated[bool, typer.Option("--clicked-only", help="Credit only clicked messages.")] = False,
    since: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First day (UTC) included.")] = None,
    until: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last day (UTC) included.")] = None,
) -> None:
    """Conversions credited to the messages sent before them, per journey, step and channel (README,
    "Measurement")."""
    from cli.reporting import fetch_attribution, print_attribution

    settings = load_settings()
    setup_logging(settings)
    answer = run(
        fetch_attribution(
            settings,
            event=event,
            value=value,
            model=model,
            window=window,
            half_life=half_life,
            clicked_only=clicked_only,
            since=since.date() if since else None,
            until=until.date() if until else None,
        )
    )
    print_attribution(console, answer)


# Events


def _parse_prop(text: str, limits: InputLimits) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        fail(f"--prop {text!r}: expected key=value")
    try:
        value = loads_json(raw, limits)  # numbers, true/false, null, JSON objects
    except InputError as exc:
        if not exc.message.startswith("malformed JSON"):  # JSON, but a value no event can hold (NaN, 1e999...)
            fail(f"--prop {key}: {exc.message}")
        value = raw  # not JSON: the text itself
    return key, value


@events_app.command("send")
def events_send(
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    event: Annotated[str, typer.Argument(help="Event name, e.g. signed_up.")],
    prop: Annotated[
        list[str] | None, typer.Option("--prop", "-p", help="key=value (value read as JSON when it parses).")
    ] = None,
    event_id: Annotated[str | None, typer.Option("--id", help="Event id (default: a new UUID).")] = None,
    anonymous: Annotated[
        bool, typer.Option("--anonymous", help="CUSTOMER is the anonymous (device or cookie) id of a visitor.")
    ] = False,
) -> None:
    """Store an event and route it to the journeys that listen to it, as POST /v1/events does."""
    from contracts.journey import Event
    from store.identity import anonymous_profile

    settings = load_settings()
    setup_logging(settings)

    limits = limits_from(settings)
    properties = dict(_parse_prop(p, limits) for p in prop or [])
    # The same checks as POST /v1/events: ids, name, properties (NUL, surrogates, size...), each naming its option.
    who = {"anonymous_id": customer} if anonymous else {"customer_id": customer}
    try:
        checked = EventIn.model_validate(
            {**who, "name": event, "properties": properties, "event_id": event_id}, context={"limits": limits}
        )
    except ValidationError as exc:
        message, field = validation_field(exc.errors())  # type: ignore[arg-type]
        option = {"customer_id": "CUSTOMER", "anonymous_id": "CUSTOMER", "name": "EVENT", "event_id": "--id"}
        fail(f"{option.get((field or '').split('.')[0], '--prop')}: {message}")

    async def main() -> Any:
        item = Event(
            event_id=checked.event_id or str(uuid.uuid4()),
            customer_id=anonymous_profile(customer) if anonymous else customer,
            name=event,
            properties=checked.properties,
            occurred_at=datetime.now(UTC),
            anonymous_id=customer if anonymous else None,
        )
        from orchestration.router import EventRouter

        async with open_pool(settings) as pool:
            client = await open_client(settings)
            router = EventRouter(pool, client, settings)
            return await router.ingest([item])

    outcomes = run(main())
    for outcome in outcomes:
        routed = "routed" if outcome.routed else "stored; routed when Temporal answers"
        if outcome.status == "duplicate":
            routed = "already received, nothing to do"
        whom = outcome.customer_id or customer
        console.print(f"{event} for {whom}: {outcome.status} ({routed}), event id {outcome.event_id}")


@customers_app.command("identify")
def customers_identify(
    customer_id: Annotated[str, typer.Argument(help="The known customer id (created when new).")],
    anonymous_id: Annotated[
        list[str] | None, typer.Option("--anonymous-id", "-a", help="A visitor's device or cookie id (repeatable).")
    ] = None,
    merge: Annotated[
        list[str] | None, typer.Option("--merge", help="Another profile id of the same person (repeatable).")
    ] = None,
    email: Annotated[str | None, typer.Option("--email", help="Link this address (events may name it).")] = None,
    source: Annotated[str, typer.Option("--source", help="Where the identification comes from.")] = "cli",
) -> None:
    """Link anonymous ids, other profiles and an email to a customer, as POST /v1/identify does."""
    from store.identity import IdentityConflictError, Link

    settings = load_settings()
    setup_logging(settings)
    links = [Link("anonymous_id", value, f"--anonymous-id {value}") for value in anonymous_id or []]
    links += [Link("customer_id", value, f"--merge {value}") for value in merge or []]
    if email:
        try:
            email = email_address(email)
        except ValueError as exc:
            fail(f"--email: {exc}")
        links.append(Link("email", email, "--email"))

    async def main() -> Any:
        from orchestration.router import EventRouter
        from store.identity import identify

        async with open_pool(settings) as pool:
            try:
                result = await identify(pool, customer_id, links, source=source, actor="cli")
            except IdentityConflictError as exc:
                fail(f"{exc.field}: {exc.message}")
            router = EventRouter(pool, await open_client(settings), settings)
            return result, await router.notify_merges(result.merges)

    result, merges = run(main())
    console.print(f"{result.customer_id}: {'created' if result.created else 'known'}, {len(merges)} new link(s)")
    for m in merges:
        runs = ", ".join(f"{r['workflow_id']} {r['status']}" for r in m["runs"]) or "no journeys"
        console.print(f"  {m['alias_kind']} {m['alias_value']}: moved {dict(m['moved']) or 'nothing'}; {runs}")


# Customers


@customers_app.command("show")
def customers_show(customer_id: Annotated[str, typer.Argument(help="Customer id.")]) -> None:
    """A customer's profile, consent, journeys (from Temporal visibility) and recent messages."""
    settings = load_settings()
    setup_logging(settings)
    run(_show_customer(settings, customer_id))


@customers_app.command("values")
def customers_values(
    customer_id: Annotated[str | None, typer.Argument(help="Show this customer's computed values.")] = None,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Make the refresh schedule match the settings and run it now.")
    ] = False,
) -> None:
    """Customer value (orders, revenue, predicted lifetime value): show a customer's, or refresh everyone's."""
    if customer_id is None and not refresh:
        err_console.print("[bold red]error:[/] name a customer, or pass --refresh")
        raise typer.Exit(2)
    settings = load_settings()
    setup_logging(settings)

    async def main() -> None:
        from orchestration.customer_values import refresh_now
        from store.customer_values import values_of
        from store.identity import resolve_customer

        if refresh:
            try:
                change = await refresh_now(await open_client(settings), settings)
            except ValueError as exc:
                fail(str(exc))
            console.print(
                f"customer-values schedule {change} (every {settings.customer_values_every}); refresh requested"
                " (skipped if one is running; follow it in the Temporal UI)"
            )
        if customer_id is not None:
            async with open_pool(settings) as pool:
                values = await values_of(pool, await resolve_customer(pool, customer_id))
            if values is None:
                console.print(f"{customer_id}: no values (no orders at the last refresh, or none has run)")
                return
            table = Table(title=f"Customer value of {customer_id}", title_justify="left", show_header=False)
            for key, value in values.items():
                table.add_row(key, _plain(value))
            console.print(table)

    run(main())


async def _show_customer(settings: Settings, asked: str) -> None:
    from store.customers import current_consent, get_customer
    from store.identity import identities_of, merges, resolve_customer
    from store.messages import recent_messages

    async with open_pool(settings) as pool:
        customer_id = await resolve_customer(pool, asked)
        if customer_id != asked:
            console.print(f"{asked} was merged into {customer_id}")
        profile = await get_customer(pool, customer_id)
        if profile is None:
            fail(f"customer {asked!r} not found")
        aliases = await identities_of(pool, customer_id)
        merge_log = await merges(pool, customer_id, limit=10)
        consent = await current_consent(pool, customer_id)
        messages = await recent_messages(pool, customer_id, limit=10)
    table = Table(title=f"Customer {customer_id}", title_justify="left", show_header=False)
    for key, value in dataclasses.asdict(profile).items():
        table.add_row(key, _when(value) if isinstance(value, datetime) else _plain(value))
    console.print(table)

    table = Table("Scope", "Name", "Status", title="Consent", title_justify="left")
    for scope in ("channels", "topics"):
        for name, value in (consent.get(scope) or {}).items():
            table.add_row(scope.rstrip("s"), name, _plain(value.get("status") if isinstance(value, dict) else value))
    console.print(table if table.row_count else "Consent: none recorded")

    if aliases:
        table = Table("Kind", "Alias", "Source", "Linked", title="Aliases", title_justify="left")
        for a in aliases:
            table.add_row(a["kind"], a["value"], a["source"], _when(a["created_at"]))
        console.print(table)
    if merge_log:
        table = Table("When", "Merged", "Source", "Actor", "Journey runs", title="Merges", title_justify="left")
        for entry in merge_log:
            fates = ", ".join(f"{r['journey_id']} {r['status']}" for r in entry["runs"]) or "-"
            table.add_row(_when(entry["merged_at"]), entry["merged_id"] or "-", entry["source"], entry["actor"], fates)
        console.print(table)

    try:
        runs = await _journey_runs(settings, customer_id)
    except CliError as exc:
        err_console.print(f"[yellow]Journeys: {exc}[/]")
    else:
        table = Table("Workflow id", "Status", "Step", "Version", "Started", title="Journeys", title_justify="left")
        for row in runs:
            table.add_row(*row)
        console.print(table if runs else "Journeys: none")

    table = Table(
        "When",
        "Journey",
        "Step",
        "Channel",
        "Status",
        "Subject / reason",
        title="Recent messages",
        title_justify="left",
    )
    for m in messages:
        rendered = m.rendered if isinstance(m.rendered, dict) else {}
        detail = m.reason or rendered.get("subject") or rendered.get("title") or ""
        table.add_row(_when(m.created_at), m.journey_id, m.step_id, m.channel, m.status, str(detail))
    console.print(table if messages else "Messages: none")


async def _journey_runs(settings: Settings, customer_id: str) -> list[tuple[str, ...]]:
    from orchestration.visibility import list_runs

    client = await open_client(settings)
    return [
        (
            run.workflow_id,
            run.status.name.lower() if run.status else "?",
            run.step or "-",
            str(run.version or "-"),
            _when(run.started_at),
        )
        for run in await list_runs(client, customer_id=customer_id, limit=50)
    ]


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if value is None else str(value)


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, list):
        value = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in value]
    return json.dumps(value, default=str, ensure_ascii=False)


if __name__ == "__main__":
    app()
