"""What the local stack prints, and its errors: one line the developer can act on (``parcours dev`` shows it
without a traceback)."""

from __future__ import annotations

from typing import NoReturn

from rich.console import Console

console = Console()


class StackError(Exception):
    """The local stack cannot start or run: a port is taken, a binary is missing, a server did not answer."""


def fail(message: str) -> NoReturn:
    raise StackError(message)
