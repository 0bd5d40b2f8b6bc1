"""What the Temporal UI's current details say about a wait (durations as people say them, and until when), and what
the ``state`` query answers."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import asyncpg
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.query.v1 import WorkflowQuery
from temporalio.api.workflowservice.v1 import QueryWorkflowRequest
from temporalio.testing import WorkflowEnvironment

from contracts.journey import STATE_QUERY
from tests.support.engine import journey_from, make_customer, running_engine
from tests.support.mail import SmtpSink
from tests.support.stack import eventually
from workflows.journey import spoken


def test_durations_read_as_people_say_them() -> None:
    assert spoken(timedelta(days=2)) == "2 days"
    assert spoken(timedelta(days=1, hours=6, minutes=5)) == "1 day 6 hours"
    assert spoken(timedelta(seconds=90)) == "1 minute 30 seconds"
    assert spoken(timedelta(weeks=2)) == "2 weeks"
    assert spoken(timedelta(0)) == "0 seconds"


async def test_a_fresh_runs_state_query_lists_no_steps_done_and_says_until_when_it_waits(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    """The ``state`` query of a run waiting at its first step, as the server hands it out (the raw payload), and the
    current details the Temporal UI shows."""
    journey = journey_from(
        {
            "id": f"fresh-{uuid.uuid4().hex[:8]}",
            "name": "Fresh",
            "trigger": {"event": "signed_up"},
            "steps": [{"id": "pause", "type": "wait", "duration": "2d"}],
        }
    )
    customer = await make_customer(pool)
    client = dev_env.client
    async with running_engine(dev_env, pool, smtp_sink) as engine:
        handle = await engine.enter(journey, customer)

        async def details() -> str:
            metadata = await handle.query("__temporal_workflow_metadata")
            assert "waiting" in metadata.current_details, metadata
            return str(metadata.current_details)

        shown = await eventually(details, timeout=15)
        answer = await client.workflow_service.query_workflow(
            QueryWorkflowRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=handle.id),
                query=WorkflowQuery(query_type=STATE_QUERY),
            )
        )
        await handle.terminate("test over")
    [payload] = answer.query_result.payloads
    state = json.loads(payload.data)
    assert state["steps_done"] == [] and state["steps_done_total"] == 0 and state["current_step"] == "pause"
    assert re.search(r"waiting 2 days \(until \d\d [A-Z][a-z]{2} \d\d:\d\d UTC\)", shown), shown
