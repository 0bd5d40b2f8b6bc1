"""Parcours' own Prometheus metrics, and serving them.

The metrics live in ``prometheus_client``'s default registry, so every process exposes the ones it moves: the API
(``GET /metrics``) the event, routing and outbox metrics; a worker (``PARCOURS_METRICS_PORT``) the sends, provider
latency, entries, conversions, exits and failed steps. Labels stay few and bounded: journey ids, step types,
channels, statuses and the reason's code (the part of a reason before its first colon, never its free text).

The Temporal SDK's own metrics (workflow task schedule-to-start latency, task slots, polls) come from its Rust
core, on a port of their own (``PARCOURS_TEMPORAL_METRICS_PORT``, ``workers.client.temporal_runtime``).
``deploy/prometheus/alerts.yml`` and ``deploy/grafana/parcours.json`` name these metrics; a test checks that every
``parcours_*`` name they use exists.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

EVENTS = Counter(
    "parcours_events",
    "Events received by POST /v1/events, by status: accepted, duplicate (an id stored before), invalid "
    "(refused with the field), unknown_customer (an alias no customer is linked to).",
    ["status"],
)
DEAD_LETTERS = Counter(
    "parcours_events_dead_lettered",
    "Events taken out of the outbox because a run refused them or routing kept failing, by reason.",
    ["reason"],
)
ROUTING_SECONDS = Histogram(
    "parcours_event_routing_seconds",
    "Time to route one event to the journeys it triggers or that listen to it (starts and signals).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
OUTBOX_EVENTS = Gauge(
    "parcours_outbox_events",
    "Events stored but not routed yet (the outbox), dead letters excluded; read from PostgreSQL at each scrape.",
)
OUTBOX_OLDEST_SECONDS = Gauge(
    "parcours_outbox_oldest_event_age_seconds",
    "Age of the oldest event not routed yet (0: the outbox is empty); read from PostgreSQL at each scrape.",
)
SENDS = Counter(
    "parcours_sends",
    "Messages decided by the send activity, by channel, status (sent, skipped, failed) and reason code.",
    ["channel", "status", "reason"],
)
PROVIDER_SECONDS = Histogram(
    "parcours_provider_seconds",
    "Time a channel's provider took to answer one delivery (SMTP, webhook, SMS or push), by channel and result "
    "(ok, refused: a permanent refusal, error: a transient error retried by Temporal).",
    ["channel", "result"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
ENTRIES = Counter(
    "parcours_entries",
    "Customers who entered a journey (a new run began), by journey and source.",
    ["journey", "source"],
)
CONVERSIONS = Counter(
    "parcours_conversions", "Conversions recorded (the journey's goal reached), by journey.", ["journey"]
)
EXITS = Counter(
    "parcours_exits", "Runs that left their journey early (exit step, exit criterion, operator).", ["journey"]
)
FAILED_STEPS = Counter(
    "parcours_failed_steps",
    "Steps recorded as failed (a send the providers refused, a webhook step that failed, a template that cannot "
    "render), by journey and step type.",
    ["journey", "step_type"],
)

# Known label values start at zero, so rate() and absent() work before the first occurrence.
for _status in ("accepted", "duplicate", "invalid", "unknown_customer"):
    EVENTS.labels(status=_status)

PARCOURS_METRICS = (
    EVENTS,
    DEAD_LETTERS,
    ROUTING_SECONDS,
    OUTBOX_EVENTS,
    OUTBOX_OLDEST_SECONDS,
    SENDS,
    PROVIDER_SECONDS,
    ENTRIES,
    CONVERSIONS,
    EXITS,
    FAILED_STEPS,
)


def reason_code(reason: str | None) -> str:
    """The bounded part of a reason for a label: ``provider_rejected: 550 ...`` gives ``provider_rejected``."""
    if not reason:
        return ""
    return reason.split(":", 1)[0].strip()[:64]


@contextmanager
def timed(histogram: Histogram, **labels: str) -> Iterator[dict[str, str]]:
    """Observe the block's duration; the yielded dict's labels may be changed inside the block (a result)."""
    chosen = dict(labels)
    started = perf_counter()
    try:
        yield chosen
    finally:
        (histogram.labels(**chosen) if chosen else histogram).observe(perf_counter() - started)


def exposition() -> tuple[bytes, str]:
    """The default registry in Prometheus' text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_served: dict[tuple[str, int], object] = {}
_serve_lock = threading.Lock()


def serve_metrics(host: str, port: int) -> None:
    """Serve ``/metrics`` on ``host:port`` from a background thread (once per address in a process).

    Raises:
        OSError: the port cannot be bound.
    """
    with _serve_lock:
        if (host, port) in _served:
            return
        try:
            _served[(host, port)] = start_http_server(port, addr=host)
        except OSError as exc:
            raise OSError(
                f"port {port} on {host} (metrics) is not available: {exc.strerror or exc}; set PARCOURS_METRICS_PORT "
                "to another port, or 0 to turn the worker's metrics off"
            ) from None
