"""Serving the API with uvicorn: ``parcours api`` (``serve_api``), and the pieces ``parcours dev`` and the
benchmark use to serve it inside a process of their own (``listen``, ``api_server``, ``ApiServer``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Iterator

import asyncpg
import uvicorn
from starlette.types import ASGIApp
from temporalio.client import Client

from config.settings import Settings

BACKLOG = 2048


class ListenError(Exception):
    """The port cannot be bound; the message names the port, why, and the setting that changes it."""


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process serving the API decides when it stops
    (``should_exit``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int, *, setting: str = "PARCOURS_API_PORT", what: str = "API") -> socket.socket:
    """A listening socket on ``host:port``, bound before anything else starts so a taken port fails first.

    Raises:
        ListenError: the port is taken or not allowed.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"port {port} on {host} ({what}) is not available: {exc.strerror}; set {setting} to another port"
        ) from None
    sock.listen(BACKLOG)
    sock.set_inheritable(False)
    return sock


def api_server(app: ASGIApp) -> ApiServer:
    """The server of ``app`` for a socket from ``listen``: structlog does the logging, the lifespan runs."""
    return ApiServer(uvicorn.Config(app, log_config=None, lifespan="on"))


async def serve_api(settings: Settings, pool: asyncpg.Pool, client: Client) -> None:
    """``parcours api``: serve on api_host:api_port until SIGINT/SIGTERM, then let in-flight requests finish.

    Raises:
        ListenError: the port is taken.
    """
    from api.app import create_app

    sock = listen(settings.api_host, settings.api_port)
    server = api_server(create_app(settings, pool=pool, client=client))
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
