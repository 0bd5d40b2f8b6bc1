"""What a failed Temporal call means for Parcours: the one place that reads Temporal's RPC status codes.

Callers ask ``meaning(exc)`` (or ``is_not_found``) instead of matching ``RPCStatusCode`` themselves, and
``answered`` bounds a call in time and turns the failures a later retry can fix into ``TemporalUnavailableError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from enum import StrEnum
from typing import Literal, TypeVar

from temporalio.client import ScheduleAlreadyRunningError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

T = TypeVar("T")


class Meaning(StrEnum):
    NOT_FOUND = "not_found"
    """No such run (never started, or closed, for a signal), schedule or history."""
    ALREADY_EXISTS = "already_exists"
    """A workflow or schedule with that id is already running, a search attribute is already registered."""
    UNAVAILABLE = "unavailable"
    """Temporal did not answer in time, is unreachable or overloaded: a later retry may succeed."""
    UNSUPPORTED = "unsupported"
    """The server does not implement the call (the time-skipping test server, for some operator calls)."""
    REJECTED = "rejected"
    """The server refused the request itself (invalid argument, permission, precondition)."""


_BY_STATUS = {
    RPCStatusCode.NOT_FOUND: Meaning.NOT_FOUND,
    RPCStatusCode.ALREADY_EXISTS: Meaning.ALREADY_EXISTS,
    RPCStatusCode.UNIMPLEMENTED: Meaning.UNSUPPORTED,
    RPCStatusCode.INVALID_ARGUMENT: Meaning.REJECTED,
    RPCStatusCode.FAILED_PRECONDITION: Meaning.REJECTED,
    RPCStatusCode.PERMISSION_DENIED: Meaning.REJECTED,
    RPCStatusCode.UNAUTHENTICATED: Meaning.REJECTED,
    RPCStatusCode.OUT_OF_RANGE: Meaning.REJECTED,
}


class TemporalUnavailableError(RuntimeError):
    """A Temporal call failed for a reason that retrying later can fix (unreachable, timeout, overloaded)."""


RefusalReason = Literal["signal_limit", "payload_too_large", "not_found", "rejected"]


class RunRefusedError(RuntimeError):
    """Temporal refused a call about one run for a reason of that run (it has received too many signals, the
    payload is too large, ...): retrying soon will not help, and nothing is wrong with Temporal for the others."""

    def __init__(self, reason: RefusalReason, detail: str, workflow_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RefusalReason = reason
        self.detail = detail
        self.workflow_id = workflow_id


def refusal(exc: RPCError) -> RunRefusedError:
    """The ``RunRefusedError`` a rejected call (``Meaning.REJECTED``) means, its reason read from the message
    (Temporal answers both limits with INVALID_ARGUMENT: "exceeded workflow execution limit for signal events",
    "Blob data size exceeds limit")."""
    message = exc.message or ""
    lowered = message.lower()
    reason: RefusalReason = "rejected"
    if "signal" in lowered and "limit" in lowered:
        reason = "signal_limit"
    elif "size" in lowered and ("limit" in lowered or "large" in lowered):
        reason = "payload_too_large"
    return RunRefusedError(reason, f"{exc.status.name if exc.status else 'RPC'}: {message}")


def meaning(exc: BaseException) -> Meaning | None:
    """What ``exc``, raised by a Temporal call, means for us; None when it is not a Temporal call's failure.

    Status codes without a meaning of their own (unavailable, deadline exceeded, resource exhausted, aborted,
    internal, unknown, ...) and transport errors mean ``UNAVAILABLE``.
    """
    if isinstance(exc, RPCError):
        return _BY_STATUS.get(exc.status, Meaning.UNAVAILABLE)
    if isinstance(exc, WorkflowAlreadyStartedError | ScheduleAlreadyRunningError):
        return Meaning.ALREADY_EXISTS
    if isinstance(exc, TemporalUnavailableError | TimeoutError | ConnectionError | OSError):
        return Meaning.UNAVAILABLE
    return None


def is_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` says the run, schedule or history asked for does not exist (or the run has closed)."""
    return meaning(exc) is Meaning.NOT_FOUND


async def answered(awaitable: Awaitable[T], within: timedelta) -> T:
    """Await a Temporal call for at most ``within``; any failure but "not found" and a refusal becomes
    ``TemporalUnavailableError``.

    "Not found" is an answer (no such run): it is raised as it came. A refusal of the request itself (invalid
    argument: a limit of the run) is ``RunRefusedError``: it concerns that run only. Everything else is left to a
    later retry, which is what callers that keep an outbox want.
    """
    try:
        return await asyncio.wait_for(awaitable, within.total_seconds())
    except RPCError as exc:
        if is_not_found(exc):
            raise
        if meaning(exc) is Meaning.REJECTED and exc.status != RPCStatusCode.UNAUTHENTICATED:
            raise refusal(exc) from exc
        raise TemporalUnavailableError(f"{exc.status.name if exc.status else 'RPC'}: {exc.message}") from exc
    except (TimeoutError, ConnectionError, OSError) as exc:
        raise TemporalUnavailableError(repr(exc)) from exc
