"""The one way Parcours processes connect to Temporal: pydantic payloads and tracing on every client, and the
SDK's own metrics for Prometheus when ``PARCOURS_TEMPORAL_METRICS_PORT`` is set."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from config.settings import Settings

_runtimes: dict[str, Runtime] = {}


class MetricsPortError(Exception):
    """The Temporal SDK's metrics port cannot be bound; the message names the port and the setting."""


def temporal_runtime(settings: Settings) -> Runtime | None:
    """The runtime whose clients and workers export the SDK's metrics (workflow task schedule-to-start latency,
    task slots, polls, requests) to Prometheus on ``metrics_host:temporal_metrics_port``, one per address in a
    process; None (the SDK's default runtime, no exporter) when the port is 0.

    Raises:
        MetricsPortError: the port is taken.
    """
    if not settings.temporal_metrics_port:
        return None
    address = f"{settings.metrics_host}:{settings.temporal_metrics_port}"
    if address not in _runtimes:
        try:
            _runtimes[address] = Runtime(
                telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address, durations_as_seconds=True))
            )
        except Exception as exc:
            raise MetricsPortError(
                f"cannot serve the Temporal SDK's metrics on {address}: {exc}; set PARCOURS_TEMPORAL_METRICS_PORT "
                "to another port, or 0 to turn them off"
            ) from None
    return _runtimes[address]


def temporal_address(settings: Settings) -> str:
    return settings.temporal_address or f"127.0.0.1:{settings.temporal_port}"


async def connect(settings: Settings, address: str | None = None) -> Client:
    return await Client.connect(
        address or temporal_address(settings),
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor()],
        runtime=temporal_runtime(settings),
    )
