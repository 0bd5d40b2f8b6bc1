"""A failed step says so where operators look: the run's search attributes and its current details.

The journey goes on after a failure (``on_failure``, or the next step); the run is still marked, so
``ParcoursHealth = "step_failed"`` finds it long after it moved on.
"""

from __future__ import annotations

from typing import Any

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle

from contracts import search_attributes as sa
from tests.support.engine import Engine, journey_from, make_customer
from tests.support.mail import free_port


async def current_details(handle: WorkflowHandle) -> str:
    """What the Temporal UI shows as the run's current details."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


def dead_webhook(url: str) -> dict[str, Any]:
    return {
        "id": "scoring",
        "name": "Scoring",
        "trigger": {"event": "signed_up"},
        "steps": [
            {"id": "score", "type": "webhook", "url": url, "body": {"c": "{{ customer.id }}"}, "on_failure": "hello"},
            {"id": "hello", "type": "send", "channel": "email", "template": {"subject": "Hi", "text": "x"}},
        ],
    }


async def test_a_failed_webhook_marks_the_run_and_the_journey_goes_on(engine: Engine) -> None:
    journey = journey_from(dead_webhook(f"http://127.0.0.1:{free_port()}/hook"))  # nothing listens there
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)
    await handle.result()

    assert [m["Subject"] for m in engine.mail_to(customer)] == ["Hi"]
    described = await handle.describe()
    attrs = described.typed_search_attributes
    assert attrs.get(sa.HEALTH) == sa.HEALTH_STEP_FAILED
    assert attrs.get(sa.FAILED_STEP) == "score"
    assert "step `score` failed: " in await current_details(handle)
    await engine.save_history(handle, "webhook-failed")


async def test_a_run_without_failures_is_not_marked(engine: Engine, webhook_sink: Any) -> None:
    journey = journey_from(dead_webhook(webhook_sink.url))
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)
    await handle.result()

    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(sa.HEALTH) is None
    assert attrs.get(sa.FAILED_STEP) is None
