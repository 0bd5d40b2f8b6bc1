"""structlog set-up: JSON lines (or console), with Temporal workflow/activity context on every line."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog


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


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_temporal_context,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
