"""OpenTelemetry tracing: a tracer provider with the exporter named in settings (none by default), the trace
context of incoming HTTP requests, and the trace id on every log line.

A trace starts at the HTTP request (FastAPI's own OpenTelemetry support opens the request's span; a W3C
``traceparent`` header continues the caller's trace, none: a new one), goes on through routing and the workflow
start (Temporal's ``TracingInterceptor`` on the client carries it in the workflow's headers), the workflow and its
activities (the same interceptor on the worker), to the provider call (``activities.journey``: a span around each
delivery, SMTP or webhook; a webhook request carries ``traceparent`` so the receiver's spans join it).

``otlp`` sends spans over OTLP/HTTP (``opentelemetry-exporter-otlp-proto-http``, installed with Parcours) to
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; default ``http://localhost:4318``),
with the OpenTelemetry SDK's own environment variables for headers, timeouts and compression.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

_configured = False


def exporter_for(name: str) -> SpanExporter | None:
    """The span exporter a setting names: ``console``, ``otlp`` (OTLP/HTTP), ``none`` (None)."""
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None


def configure_tracing(service_name: str, exporter: str = "none") -> None:
    """Install a global tracer provider once. ``exporter``: none (the default: no provider, spans cost nothing),
    otlp, console."""
    global _configured
    chosen = exporter_for(exporter)
    if _configured or chosen is None:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(chosen))
    trace.set_tracer_provider(provider)
    _configured = True


def add_trace_id(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ``trace_id`` and ``span_id`` (hex), when there is a span."""
    try:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
            event_dict.setdefault("span_id", format(context.span_id, "016x"))
    except Exception:  # logging must never fail
        pass
    return event_dict
