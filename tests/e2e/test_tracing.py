"""One trace from the HTTP request to the email (config/tracing.py, api/tracing.py): a caller's ``traceparent``
continues through routing, the workflow start, the workflow, its activities and the SMTP delivery; log lines
inside it carry its trace id."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment

from api.app import create_app, run_drainer
from config.tracing import add_trace_id
from tests.support.mail import SmtpSink
from tests.support.stack import API_KEY, eventually, make_settings
from workers.worker import build_worker, channels_for

pytestmark = pytest.mark.devserver

TRACE_ID = uuid.uuid4().hex
TRACEPARENT = f"00-{TRACE_ID}-{uuid.uuid4().hex[:16]}-01"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Every span this process finishes from now on (the global provider is set once per process)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_an_event_to_email_path_is_one_trace(
    spans: InMemorySpanExporter, dev_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    # The production client: workers.client.connect puts the same interceptor on every client and its workers.
    client = Client(**{**dev_env.client.config(), "interceptors": [TracingInterceptor()]})
    settings = make_settings(smtp_host=smtp_sink.host, smtp_port=smtp_sink.port)
    app = create_app(settings, pool=pool, client=client)
    tag = uuid.uuid4().hex[:10]
    journey = {
        "id": f"j-{tag}",
        "name": f"Traced {tag}",
        "trigger": {"event": f"start-{tag}"},
        "steps": [
            {"id": "hello", "type": "send", "channel": "email", "template": {"subject": f"Hi {tag}", "text": "x"}},
        ],
    }
    customer_id = f"cust-{tag}"
    async with channels_for(settings, pool) as channels:
        async with (
            build_worker(client, settings, pool, channels),
            run_drainer(app.state.router),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://parcours.test", headers={"X-API-Key": API_KEY}
            ) as http,
        ):
            assert (await http.post("/v1/journeys", json=journey)).status_code == 201
            await http.put(f"/v1/customers/{customer_id}", json={"email": f"{customer_id}@example.com"})
            await http.put(f"/v1/customers/{customer_id}/consent", json={"channels": {"email": "granted"}})
            response = await http.post(
                "/v1/events",
                json={"customer_id": customer_id, "name": f"start-{tag}"},
                headers={"traceparent": TRACEPARENT},
            )
            assert response.json()["results"][0]["routed"] is True

            async def delivered() -> bool:
                names = {s.name for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == TRACE_ID}
                return "deliver email" in names and any(n.startswith("CompleteWorkflow") for n in names)

            await eventually(delivered, timeout=20)
    mails = [m for m in smtp_sink.messages if f"{customer_id}@example.com" in m.rcpt_tos]
    assert [m.message["Subject"] for m in mails] == [f"Hi {tag}"]

    ours = [s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == TRACE_ID]
    names = {s.name for s in ours}
    assert "POST /v1/events" in names  # the request's span continued the caller's trace
    assert any(n.startswith("StartWorkflow:JourneyWorkflow") for n in names), names  # routing started the run
    assert any(n.startswith("RunWorkflow:JourneyWorkflow") for n in names), names  # the workflow
    assert any(n.startswith("RunActivity:send_message") for n in names), names  # its send activity
    delivery = next(s for s in ours if s.name == "deliver email")  # the SMTP call, inside that activity
    assert delivery.attributes is not None and delivery.attributes["parcours.channel"] == "email"
    # Nothing of this path started a trace of its own.
    workflow_spans = [
        s for s in spans.get_finished_spans() if s.name.startswith("RunWorkflow:") and tag in str(s.attributes)
    ]
    assert all(format(s.context.trace_id, "032x") == TRACE_ID for s in workflow_spans)


def test_log_lines_inside_a_span_carry_its_trace_id(spans: InMemorySpanExporter) -> None:
    with trace.get_tracer(__name__).start_as_current_span("work") as span:
        line = add_trace_id(None, "info", {"event": "x"})
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in add_trace_id(None, "info", {"event": "outside"})
