"""What the API's validation processes run (``api/validation.py``): a CPU-bound check with a time limit.

These processes import only the journey language (this module is what they preload), so starting one is cheap.
The limit is enforced inside the process by an interval timer: when it fires, the check stops with
``TooSlow`` and the process is free for the next one. Code that never returns to the interpreter (a single C call
running for minutes) is stopped by the API process instead, which replaces the processes as a last resort.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

R = TypeVar("R")


class TooSlow(Exception):
    """The check ran past its time limit (``seconds``)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"took longer than {seconds:g} s")
        self.seconds = seconds

    def __reduce__(self) -> tuple[type[TooSlow], tuple[float]]:
        return (type(self), (self.seconds,))


class _Alarm(BaseException):
    """Raised by the timer; a BaseException, so no ``except Exception`` in the checked code can swallow it."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Alarm


def prepare() -> None:
    """The process initializer: the timer's handler; Ctrl-C is the API process's business, not ours."""
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def ready() -> int:
    """A no-op the API runs once per process at start (the processes exist and have imported what they need)."""
    import journeys.validation  # noqa: F401 - imported now, not on the first publish

    return os.getpid()


def within(seconds: float, function: Callable[..., R], *args: Any) -> R:
    """``function(*args)``, or ``TooSlow`` once it has run ``seconds``."""
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return function(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Alarm:  # also when the timer fired just as the check returned
        raise TooSlow(seconds) from None
