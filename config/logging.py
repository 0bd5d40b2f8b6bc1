"""structlog set-up: JSON lines (or console), with Temporal workflow/activity context on every line.

Logs never carry what a customer would not want copied into a log store: unless ``PARCOURS_LOG_REDACT=false``,
``redact`` replaces the values of recipient, address, content and secret fields (``SENSITIVE_KEYS``, at any depth)
with ``[redacted]``, and in every other string it masks email addresses and the sealed tokens of preference,
unsubscribe and tracking links. The same applies to the standard library's logging (uvicorn's access log, whose
request lines hold those links).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from config.tracing import add_trace_id


def add_temporal_context(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Add workflow id, run id, activity and attempt when the line is logged inside an activity."""
    try:
        from temporalio import activity

        if activity.in_activity():
            info = activity.info()
            event_dict.setdefault("workflow_id", info.workflow_id)
            event_dict.setdefault("run_id", info.workflow_run_id)
            event_dict.setdefault("activity", info.activity_type)
            event_dict.setdefault("attempt", info.attempt)
            workflow_id = info.workflow_id or ""
            customer = workflow_id.split(":", 1)[1] if ":" in workflow_id else None
            if customer:
                event_dict.setdefault("customer_id", customer)
    except Exception:  # logging must never fail
        pass
    return event_dict


REDACTED = "[redacted]"
SENSITIVE_KEYS = frozenset(
    {
        "recipient",
        "recipients",
        "rcpt_to",
        "rcpt_tos",
        "to",
        "email",
        "phone",
        "address",
        "content",
        "subject",
        "text",
        "html",
        "body",
        "payload",
        "title",
        "properties",
        "attributes",
        "traits",
        "token",
        "unsubscribe_url",
        "preferences_url",
        "subscribe_url",
        "password",
        "secret",
        "api_key",
        "authorization",
    }
)
"""Field names whose values are never logged (compared in lower case)."""

# The sealed token of a preference, unsubscribe, click or open link (api/routes_preferences, routes_tracking).
_LINK_TOKEN = re.compile(r"(/(?:preferences|v1/unsubscribe|c|o)/)[^/\s?#\"']+")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_MAX_DEPTH = 20


def redact_text(text: str) -> str:
    """``text`` with email addresses and link tokens masked."""
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    if "/" in text:
        text = _LINK_TOKEN.sub(r"\1[token]", text)
    return text


def redact_value(value: Any, depth: int = 0) -> Any:
    """``value`` with sensitive fields replaced and strings masked, at any depth (a copy; never fails)."""
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return REDACTED
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in SENSITIVE_KEYS else redact_value(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, depth + 1) for v in value]
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: see the module docstring."""
    try:
        for key in list(event_dict):
            value = event_dict[key]
            if key.lower() in SENSITIVE_KEYS and value is not None:
                event_dict[key] = REDACTED
            elif isinstance(value, str | dict | list | tuple | set | frozenset):
                event_dict[key] = redact_value(value)
    except Exception:  # logging must never fail
        pass
    return event_dict


class RedactingFilter(logging.Filter):
    """The same masking for the standard library's records (uvicorn's access log, libraries)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            masked = redact_text(message)
            if masked != message:
                record.msg, record.args = masked, None
        except Exception:  # logging must never fail
            pass
        return True


class ShortActivityFailures(logging.Filter):
    """The Temporal SDK logs every failed activity attempt at warning with its full (chained) traceback: some
    80 lines per retry of a webhook that is down. This keeps one line per attempt, cause first, and logs the
    traceback at debug only (logger ``temporalio.activity.traceback``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if record.exc_info and record.levelno >= logging.WARNING and record.exc_info[1] is not None:
                error = record.exc_info[1]
                traceback_logger = logging.getLogger("temporalio.activity.traceback")
                if traceback_logger.isEnabledFor(logging.DEBUG):
                    traceback_logger.debug(record.getMessage(), exc_info=record.exc_info)
                cause = " ".join(str(error).split())[:300] or type(error).__name__
                message, _, context = record.getMessage().partition(" (")
                record.msg = f"{message}: {cause}" + (f" ({context}" if context else "")
                record.args, record.exc_info, record.exc_text = None, None, None
        except Exception:  # logging must never fail
            pass
        return True


def configure_logging(level: str = "INFO", fmt: str = "json", *, redacted: bool = True) -> None:
    """Configure structlog and the standard library's logging; ``redacted``: mask personal data (the default)."""
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_temporal_context,
            add_trace_id,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            *([redact] if redacted else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for handler in logging.getLogger().handlers:
        for existing in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(existing)
        if redacted:
            handler.addFilter(RedactingFilter())
    activity_logger = logging.getLogger("temporalio.activity")
    for short in [f for f in activity_logger.filters if isinstance(f, ShortActivityFailures)]:
        activity_logger.removeFilter(short)
    activity_logger.addFilter(ShortActivityFailures())
