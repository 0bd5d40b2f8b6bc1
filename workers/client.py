"""The one way Parcours processes connect to Temporal: pydantic payloads and tracing on every client."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter

from config.settings import Settings


def temporal_address(settings: Settings) -> str:
    return settings.temporal_address or f"127.0.0.1:{settings.temporal_port}"


async def connect(settings: Settings, address: str | None = None) -> Client:
    return await Client.connect(
        address or temporal_address(settings),
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor()],
    )
