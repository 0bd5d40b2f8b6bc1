"""``parcours broadcasts create|show|pause|resume|cancel|test-send`` and ``parcours journeys preview|test-send``.

They run the same code as the API (``api/broadcasting.py``, ``api/previews.py``) against the database and Temporal
that ``cli.context`` finds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.context import console, fail, open_client, open_pool, run, setup_logging
from config.settings import Settings

broadcasts_app = typer.Typer(help="Send one message to a segment, now or at a time.", no_args_is_help=True)

FINAL = ("completed", "cancelled")


def _settings() -> Settings:
    from cli.main import load_settings

    settings = load_settings()
    setup_logging(settings)
    return settings


async def _api(call: Awaitable[Any]) -> Any:
    """An ``api`` helper's answer; its ``ApiError`` becomes the one-line CLI error."""
    from api.schemas import ApiError

    try:
        return await call
    except ApiError as exc:
        fail(exc.message)


def _read_definition(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc}")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        fail(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}")


@broadcasts_app.command("create")
def broadcasts_create(
    file: Annotated[Path, typer.Argument(help="The broadcast definition (YAML or JSON).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show progress until it is done.")] = False,
) -> None:
    """Create a broadcast and start it (its audience is frozen when it starts)."""
    from api.broadcasting import create_and_start
    from api.routes_broadcasts import parse_broadcast
    from api.schemas import ApiError

    settings = _settings()

    async def main() -> dict[str, Any]:
        data = _read_definition(file)
        try:
            broadcast = parse_broadcast(data)
        except ApiError as exc:
            fail(f"{file}: {exc.message}")
        async with open_pool(settings) as pool:
            client = await open_client(settings)
            return await _api(create_and_start(pool, client, settings, broadcast))  # type: ignore[no-any-return]

    view = run(main())
    console.print(f"broadcast {view['id']} created: {view['status']}")
    if follow:
        _follow(settings, view["id"])


@broadcasts_app.command("show")
def broadcasts_show(
    broadcast_id: Annotated[str, typer.Argument(help="Broadcast id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show progress until it is done.")] = False,
) -> None:
    """Status, progress (with a bar) and report."""
    settings = _settings()
    if follow:
        _follow(settings, broadcast_id)
        return
    view = run(_describe(settings, broadcast_id))
    _print_view(view)


async def _describe(settings: Settings, broadcast_id: str) -> dict[str, Any]:
    from api.broadcasting import describe

    async with open_pool(settings) as pool:
        return await _api(describe(pool, broadcast_id))  # type: ignore[no-any-return]


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _print_view(view: dict[str, Any]) -> None:
    progress = view["progress"]
    with _bar() as bar:
        bar.add_task(f"{view['id']} ({view['status']})", total=max(progress["total"], 1), completed=progress["done"])
    table = Table("Status", "Recipients")
    for status, count in sorted(progress["by_status"].items()):
        table.add_row(status, str(count))
    console.print(table)
    if progress["next_due"]:
        console.print(f"next due: {progress['next_due']}")
    report = view["report"]
    line = f"sent {report['sent']}, opened {report['opened']}, clicked {report['clicked']}"
    if report["converted"] is not None:
        line += f", converted {report['converted']}"
    if report["holdout"]:
        line += f"; holdout {report['holdout']} (converted {report['holdout_converted']})"
    console.print(line)
    if len(report.get("by_channel") or {}) > 1:  # a channel list: how each channel did
        for channel, part in report["by_channel"].items():
            converted = "" if part["converted"] is None else f", converted {part['converted']}"
            console.print(
                f"  {channel}: sent {part['sent']}, failed {part['failed']}, opened {part['opened']}, "
                f"clicked {part['clicked']}{converted}"
            )


def _follow(settings: Settings, broadcast_id: str) -> None:
    async def main() -> dict[str, Any]:
        from api.broadcasting import describe

        async with open_pool(settings) as pool:
            view = await _api(describe(pool, broadcast_id))
            with _bar() as bar:
                task = bar.add_task(broadcast_id, total=None)
                while True:
                    progress = view["progress"]
                    bar.update(
                        task,
                        total=max(progress["total"], 1),
                        completed=progress["done"],
                        description=f"{broadcast_id} ({view['status']})",
                    )
                    if view["status"] in FINAL or view["status"] == "paused":
                        return view  # type: ignore[no-any-return]
                    await asyncio.sleep(0.5)
                    view = await _api(describe(pool, broadcast_id))

    _print_view(run(main()))


def _control(action: str) -> Callable[[str], None]:
    def command(broadcast_id: Annotated[str, typer.Argument(help="Broadcast id.")]) -> None:
        from orchestration.broadcasts import control

        settings = _settings()

        async def main() -> str | None:
            async with open_pool(settings) as pool:
                client = await open_client(settings)
                return await control(pool, client, broadcast_id, action)

        status = run(main())
        if status is None:
            fail(f"unknown broadcast '{broadcast_id}'")
        console.print(f"broadcast {broadcast_id}: {status}")

    command.__doc__ = {
        "pause": "Pause sending (within the batch under way).",
        "resume": "Resume a paused broadcast.",
        "cancel": "Cancel: pending recipients are not sent.",
    }[action]
    return command


for _action in ("pause", "resume", "cancel"):
    broadcasts_app.command(_action)(_control(_action))


def journeys_preview(
    journey_id: Annotated[str, typer.Argument(help="Journey id.")],
    step: Annotated[str, typer.Argument(help="The send step's id.")],
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
    prop: Annotated[
        list[str] | None, typer.Option("--prop", "-p", help="A trigger event property key=value (JSON when it parses).")
    ] = None,
) -> None:
    """What CUSTOMER would receive from STEP on each channel, and whether the send policy would send it now."""
    from api import previews
    from api.routes_previews import PreviewBody, TriggerBody, _request
    from cli.main import _parse_prop
    from journeys.values import limits_from

    settings = _settings()
    properties = dict(_parse_prop(p, limits_from(settings)) for p in prop or [])

    async def main() -> previews.Preview:
        async with open_pool(settings) as pool:
            body = PreviewBody(step=step, customer_id=customer_id, event=TriggerBody(properties=properties))
            request = await _api(_request(pool, journey_id, body))
            return await previews.preview(pool, settings, request)

    result = run(main())
    decision = result.decision
    style = {"send": "green", "skip": "red", "defer": "yellow"}[decision.verdict]
    console.print(f"[bold {style}]{decision.summary}[/]")
    if decision.refused:
        for channel, reason in decision.refused.items():
            console.print(f"  {channel}: refused ({reason})")
    for channel, fields in result.channels.items():
        table = Table(title=channel, show_header=False)
        for name, value in fields.items():
            table.add_row(name, value if isinstance(value, str) else json.dumps(value))
        console.print(table)
        if result.missing.get(channel):
            console.print(
                f"  [yellow]{channel}: empty for this customer: {escape(', '.join(result.missing[channel]))}[/]"
            )


# --- test sends ---------------------------------------------------------------------------------------------------

ToOption = Annotated[
    str | None, typer.Option("--to", help="The email address, phone number or webhook URL that gets the test.")
]
ChannelOption = Annotated[
    str | None, typer.Option("--channel", "-c", help="Which of the message's channels (default: its first).")
]
PlatformOption = Annotated[
    str | None,
    typer.Option("--device-platform", help="A push test's device: fcm, apns or web (as a device is registered)."),
]
TokenOption = Annotated[str | None, typer.Option("--device-token", help="The FCM or APNs token of the device.")]
SubscriptionOption = Annotated[
    str | None,
    typer.Option(
        "--device-subscription",
        help='A Web Push subscription as JSON, as the browser gives it: {"endpoint": ..., "keys": {...}}.',
    ),
]


def _device(platform: str | None, token: str | None, subscription: str | None) -> Any:
    """The ``--device-*`` options as a test send's device, checked as the API checks it; None without them."""
    from api import previews
    from api.schemas import ApiError

    if platform is None and token is None and subscription is None:
        return None
    data: dict[str, Any] = {"platform": platform}
    if token is not None:
        data["token"] = token
    if subscription is not None:
        try:
            data["subscription"] = json.loads(subscription)
        except ValueError as exc:
            fail(f"--device-subscription: not JSON: {exc}")
    try:
        return previews.parse_device(data)
    except ApiError as exc:
        fail(exc.message)


def _print_test_send(result: Any) -> None:
    where = f"{result.platform} device {result.to}" if result.platform else result.to
    if result.status == "sent":
        said = f" (provider message id {result.provider_message_id})" if result.provider_message_id else ""
        console.print(escape(f"test sent on {result.channel} to {where}, marked [TEST]{said}"), highlight=False)
    else:
        fail(f"the test on {result.channel} to {where} failed: {result.error}")


def journeys_test_send(
    journey_id: Annotated[str, typer.Argument(help="Journey id.")],
    step: Annotated[str, typer.Argument(help="The send step's id.")],
    customer_id: Annotated[str, typer.Argument(help="Customer id: the message is rendered with their data.")],
    to: ToOption = None,
    channel: ChannelOption = None,
    device_platform: PlatformOption = None,
    device_token: TokenOption = None,
    device_subscription: SubscriptionOption = None,
    prop: Annotated[
        list[str] | None, typer.Option("--prop", "-p", help="A trigger event property key=value (JSON when it parses).")
    ] = None,
) -> None:
    """Send STEP's message, rendered for CUSTOMER, to --to or (push) the --device-* given: marked [TEST], counted
    nowhere, as POST /v1/journeys/{id}/test-send. Exit code 1 when the provider refused it."""
    from api import previews
    from api.routes_previews import TestSendBody, TriggerBody, _request
    from cli.main import _parse_prop
    from journeys.values import limits_from

    settings = _settings()
    properties = dict(_parse_prop(p, limits_from(settings)) for p in prop or [])

    async def main() -> None:
        device = _device(device_platform, device_token, device_subscription)
        async with open_pool(settings) as pool:
            body = TestSendBody(
                step=step, customer_id=customer_id, event=TriggerBody(properties=properties), to=to, channel=channel
            )
            request = await _api(_request(pool, journey_id, body))
            checked = previews.test_send_checked(
                pool, settings, request, channel, to, device, sender=previews.CLI_SENDER
            )
            _print_test_send(await _api(checked))

    run(main())


@broadcasts_app.command("test-send")
def broadcasts_test_send(
    customer_id: Annotated[str, typer.Argument(help="Customer id: the message is rendered with their data.")],
    broadcast_id: Annotated[str | None, typer.Option("--id", help="A broadcast created already.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="A broadcast definition (YAML or JSON).")] = None,
    to: ToOption = None,
    channel: ChannelOption = None,
    device_platform: PlatformOption = None,
    device_token: TokenOption = None,
    device_subscription: SubscriptionOption = None,
) -> None:
    """Send a broadcast's message (--id, or a definition in --file), rendered for CUSTOMER, to --to or (push) the
    --device-* given: marked [TEST], counted nowhere, as POST /v1/broadcasts/test-send."""
    from api import previews
    from api.routes_broadcasts import TestSendBody, _preview_request

    settings = _settings()

    async def main() -> None:
        if (broadcast_id is None) == (file is None):
            fail("give either --id (a broadcast created already) or --file (a definition)")
        definition = _read_definition(file) if file is not None else None
        if file is not None and not isinstance(definition, dict):
            fail(f"{file}: a broadcast definition is a mapping")
        device = _device(device_platform, device_token, device_subscription)
        async with open_pool(settings) as pool:
            body = TestSendBody(
                broadcast=definition, broadcast_id=broadcast_id, customer_id=customer_id, to=to, channel=channel
            )
            request = await _api(_preview_request(pool, body))
            checked = previews.test_send_checked(
                pool, settings, request, channel, to, device, sender=previews.CLI_SENDER
            )
            _print_test_send(await _api(checked))

    run(main())
