"""Archiving and erasing always finish: a run that does not leave when asked is terminated, and that is recorded."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.worker import Worker

from api import routes_privacy
from contracts import search_attributes as sa
from contracts.journey import WORKFLOW_NAME
from orchestration import exits
from orchestration.errors import is_not_found
from orchestration.visibility import runs_query
from store.privacy import pseudonym
from tests.support.broken_workflows import DeafJourney
from tests.support.stack import Stack, eventually, stack_fixture  # noqa: F401  (registers the fixture)
from tests.support.temporal import task_queue

pytestmark = pytest.mark.devserver


@contextlib.asynccontextmanager
async def deaf_run(client: Client, journey_id: str, customer_id: str) -> AsyncIterator[str]:
    """A run of the journey for the customer that ignores the exit signal, on a task queue of its own."""
    queue = task_queue()
    async with Worker(client, task_queue=queue, workflows=[DeafJourney]):
        workflow_id = f"{journey_id}:{customer_id}"
        await client.start_workflow(
            WORKFLOW_NAME,
            {"not": "read"},
            id=workflow_id,
            task_queue=queue,
            search_attributes=sa.at_start(journey_id, customer_id, 1, "await-done"),
        )
        yield workflow_id


async def listed(stack: Stack, query: str) -> int:
    return (await stack.client.count_workflows(query)).count


async def test_archive_terminates_a_run_that_ignores_the_exit_and_logs_why(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exits, "GRACE_SECONDS", 1.0)
    journey = stack.journey()
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    polite = await stack.customer()
    response = await stack.http.post("/v1/events", json={"customer_id": polite, "name": journey["trigger"]["event"]})
    assert response.json()["results"][0]["status"] == "accepted"
    deaf = await stack.customer()
    async with deaf_run(stack.client, journey["id"], deaf) as workflow_id:
        running = runs_query(journey_id=journey["id"], running=True)

        async def both_listed() -> bool:
            return await listed(stack, running) == 2

        await eventually(both_listed, timeout=15)

        archived = await stack.http.post(f"/v1/journeys/{journey['id']}/archive")

        assert archived.status_code == 200, archived.text
        assert (archived.json()["exited"], archived.json()["terminated"]) == (1, 1)
        described = await stack.client.get_workflow_handle(workflow_id).describe()
        assert described.status == WorkflowExecutionStatus.TERMINATED
    # The polite run recorded its own exit; the deaf one is in the operators' log, with why.
    outcome = await stack.pool.fetchval(
        "SELECT detail->>'reason' FROM step_outcomes WHERE customer_id = $1 AND step_id = '$exit'", polite
    )
    assert outcome == "archived"
    action = await stack.pool.fetchrow(
        "SELECT action, actor, reason, detail FROM ops_actions WHERE target = $1", workflow_id
    )
    assert (action["action"], action["actor"], action["reason"]) == ("terminate", "archive", "archived")
    assert action["detail"]["why"] == "did_not_close" and action["detail"]["terminated"] is True


async def test_erasure_terminates_a_run_that_ignores_the_exit_and_deletes_its_history(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_privacy, "ERASE_WAIT_SECONDS", 1.0)
    journey = stack.journey()
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    customer = await stack.customer()
    async with deaf_run(stack.client, journey["id"], customer) as workflow_id:

        async def found() -> bool:
            return await listed(stack, runs_query(customer_id=customer, running=True)) == 1

        await eventually(found, timeout=15)

        erased = await stack.http.delete(f"/v1/customers/{customer}")

        assert erased.status_code == 200, erased.text
        assert erased.json()["complete"] is True
        runs = erased.json()["runs"]
        assert (runs["exited"], runs["terminated"]) == (0, 1)
        assert runs["histories_deleted"] >= 1

        async def history_gone() -> (
            bool
        ):  # Temporal deletes in the background (the dev server: 30 s to a minute or more)
            try:
                await stack.client.get_workflow_handle(workflow_id).describe()
            except RPCError as exc:
                return is_not_found(exc)
            return False

        # Its history, which holds the customer's id and data, is gone.
        await eventually(history_gone, timeout=120, interval=2.0)
    alias = pseudonym(stack.settings.link_secret.get_secret_value().encode(), customer)
    action = await stack.pool.fetchrow("SELECT actor, detail FROM ops_actions WHERE target = $1", f"erased:{alias}")
    assert action["actor"] == "erasure" and action["detail"]["journey_id"] == journey["id"]
    assert (
        await stack.pool.fetchval("SELECT count(*) FROM ops_actions WHERE target LIKE '%' || $1 || '%'", customer) == 0
    )


def test_erasure_finds_the_segment_run_that_entered_the_customer_from_the_entry_id() -> None:
    """The segment run's history lists the members it entered; the entry id names it (scheduled or not)."""
    scheduled = "segment:win-back:2026-11-30T10:00:00Z:cust-1"
    assert exits.segment_workflow_id("win-back", scheduled, "cust-1") == "segment:win-back-2026-11-30T10:00:00Z"
    by_hand = "segment:win-back:segment:win-back-manual-7:cust-1"
    assert exits.segment_workflow_id("win-back", by_hand, "cust-1") == "segment:win-back-manual-7"
    assert exits.segment_workflow_id("win-back", "ev-123", "cust-1") is None  # an entry by an event
    assert exits.segment_workflow_id("win-back", scheduled, "cust-2") is None
