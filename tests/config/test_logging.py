"""Logs mask recipients, content and link tokens by default (the console channel and the access log too)."""

from __future__ import annotations

import io
import json
import logging

import structlog

from activities.channels.base import OutboundMessage
from activities.channels.console import ConsoleChannel
from config.logging import configure_logging

TOKEN = "v2.c2VhbGVkLXRva2VuLWZvci1hZGEtb24tdGhlLWVtYWlsLWNoYW5uZWw"


def capture(redacted: bool) -> io.StringIO:
    out = io.StringIO()
    configure_logging("INFO", "json", redacted=redacted)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out), cache_logger_on_first_use=False)
    return out


async def test_console_channel_and_free_text_are_redacted() -> None:
    out = capture(redacted=True)
    try:
        await ConsoleChannel("sms").deliver(
            OutboundMessage(
                idempotency_key="j:c:1:s",
                customer_id="c",
                channel="sms",
                recipient="+33612345678",
                journey_id="j",
                step_id="s",
                content={"text": "Your code is 4242"},
            )
        )
        structlog.get_logger().warning(
            "smtp.refused", error="550 <ada@example.com> no such user", path=f"/v1/unsubscribe/{TOKEN}"
        )
    finally:
        configure_logging("INFO", "json")
    text = out.getvalue()
    assert "+33612345678" not in text and "4242" not in text
    assert "ada@example.com" not in text and TOKEN not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["recipient"] == "[redacted]" and lines[0]["content"] == "[redacted]"
    assert lines[1]["path"] == "/v1/unsubscribe/[token]"
    assert lines[1]["error"] == "550 <[email]> no such user"


async def test_redaction_can_be_turned_off_to_debug() -> None:
    out = capture(redacted=False)
    try:
        structlog.get_logger().info("x", recipient="ada@example.com")
    finally:
        configure_logging("INFO", "json")
    assert "ada@example.com" in out.getvalue()


def test_access_log_lines_lose_their_tokens() -> None:
    # As `parcours api` runs uvicorn (log_config=None): access lines propagate to the root handlers. Servers other
    # tests started with uvicorn's own logging config detach "uvicorn.access"; undo that for this test.
    access = logging.getLogger("uvicorn.access")
    detached = [logging.getLogger("uvicorn"), access]
    saved = [(logger.propagate, logger.handlers[:]) for logger in detached]
    for logger in detached:
        logger.propagate, logger.handlers[:] = True, []
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    try:
        configure_logging("INFO", "json")  # puts the redacting filter on every root handler, this one included
        access.warning('%s - "%s %s HTTP/1.1" %d', "1.2.3.4", "GET", f"/c/{TOKEN}", 302)
    finally:
        logging.getLogger().removeHandler(handler)
        for logger, (propagate, handlers) in zip(detached, saved, strict=True):
            logger.propagate, logger.handlers[:] = propagate, handlers
    assert TOKEN not in stream.getvalue() and "/c/[token]" in stream.getvalue()


def test_a_failed_activity_attempt_logs_one_line_cause_first_and_its_traceback_only_at_debug() -> None:
    from temporalio import activity
    from temporalio.exceptions import ApplicationError

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    traceback_logger = logging.getLogger("temporalio.activity.traceback")
    try:
        configure_logging("INFO", "console")
        for debugging in (False, True):
            traceback_logger.setLevel(logging.DEBUG if debugging else logging.NOTSET)
            try:
                try:
                    raise RuntimeError("deep inside httpx")
                except RuntimeError:
                    raise ApplicationError("webhook POST http://crm.example/hook answered 503: busy") from None
            except ApplicationError:
                activity.logger.warning("Completing activity as failed", exc_info=True)
            if not debugging:
                quiet = stream.getvalue()
    finally:
        logging.getLogger().removeHandler(handler)
        traceback_logger.setLevel(logging.NOTSET)
    [line] = quiet.splitlines()
    assert "Completing activity as failed: webhook POST http://crm.example/hook answered 503: busy" in line
    assert "Traceback" in stream.getvalue()[len(quiet) :]  # at debug, the whole story
