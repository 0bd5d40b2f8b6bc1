"""Taking one customer out of a journey: ``POST /v1/journeys/{id}/runs/{customer}/exit``."""

from __future__ import annotations

from contracts.journey import workflow_id
from store import ops as ops_store
from tests.support.stack import Stack, eventually, stack_fixture  # noqa: F401  (registers the fixture)


async def test_exit_takes_the_customer_out_with_the_reason_and_logs_who(stack: Stack) -> None:
    journey = stack.journey()
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    customer = await stack.customer()
    sent = await stack.http.post("/v1/events", json={"customer_id": customer, "name": journey["trigger"]["event"]})
    assert sent.status_code == 202, sent.text
    handle = stack.client.get_workflow_handle(workflow_id(journey["id"], customer))

    async def waiting() -> bool:
        state = await handle.query("state")
        return bool(state["current_step"] == "await-done")

    await eventually(waiting)
    answer = await stack.http.post(
        f"/v1/journeys/{journey['id']}/runs/{customer}/exit", json={"reason": "complained to support", "actor": "eve"}
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["workflow_ids"] == [handle.id]

    result = await handle.result()
    assert result["status"] == "exited" and result["exit_reason"] == "complained to support"
    outcome = await stack.pool.fetchrow(
        "SELECT detail FROM step_outcomes WHERE customer_id = $1 AND step_id = '$exit'", customer
    )
    assert outcome is not None and outcome["detail"]["reason"] == "complained to support"
    logged = [a for a in await ops_store.recent_actions(stack.pool) if a.target == handle.id]
    assert [(a.action, a.actor, a.reason) for a in logged] == [("exit", "eve", "complained to support")]

    again = await stack.http.post(f"/v1/journeys/{journey['id']}/runs/{customer}/exit", json={"reason": "again"})
    assert again.status_code == 404
    assert again.json()["error"]["field"] == "customer_id"


async def test_exit_needs_a_reason(stack: Stack) -> None:
    answer = await stack.http.post("/v1/journeys/some-journey/runs/someone/exit", json={"reason": ""})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "reason"
