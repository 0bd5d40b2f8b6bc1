"""The HTTP API against the real stack in process (dev server, embedded PostgreSQL, worker, SMTP sink)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from contracts.journey import JourneyResult, workflow_id
from store import events as event_store
from tests.support.mail import free_port
from tests.support.stack import API_KEY, Stack, eventually, make_settings, stack_fixture, unique  # noqa: F401  (registers the fixture)

pytestmark = pytest.mark.devserver


def event(customer_id: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "name": name, **extra}


async def test_event_over_http_starts_a_journey_and_the_email_arrives(stack: Stack) -> None:
    journey = stack.journey()
    published = await stack.publish(journey)
    assert published == {"id": journey["id"], "version": 1, "created": True, "status": "active"}
    customer_id = await stack.customer()

    response = await stack.http.post("/v1/events", json=event(customer_id, journey["trigger"]["event"]))
    assert response.status_code == 202, response.text
    [result] = response.json()["results"]
    assert result["status"] == "accepted" and result["routed"] is True

    [mail] = await stack.smtp.wait_for(1, timeout=15)
    assert mail.rcpt_tos == [f"{customer_id}@example.com"]
    assert mail.message["Subject"] == journey["steps"][0]["template"]["subject"]

    # The customer's journey, found through visibility by the customer search attribute, shows its step.
    async def runs() -> list[dict[str, Any]]:
        response = await stack.http.get(f"/v1/customers/{customer_id}/journeys")
        assert response.status_code == 200, response.text
        found = response.json()
        assert found and found[0]["step"] == "await-done", found
        return found

    [run] = await eventually(runs)
    assert run["workflow_id"] == workflow_id(journey["id"], customer_id)
    assert run["journey_id"] == journey["id"] and run["version"] == 1 and run["status"] == "running"
    assert run["journey_name"] == journey["name"]

    # A listened event reaches the running workflow; the goal ends it.
    response = await stack.http.post("/v1/events", json=event(customer_id, journey["goal"]["event"]))
    assert response.json()["results"][0]["status"] == "accepted"
    handle = stack.client.get_workflow_handle(workflow_id(journey["id"], customer_id), result_type=JourneyResult)
    result = await handle.result()
    assert result.status == "converted"


async def test_batch_with_duplicates_and_invalid_items(stack: Stack) -> None:
    customer_id = unique("cust")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    response = await stack.http.post("/v1/events", json=event(customer_id, "viewed", event_id=first))
    assert response.json()["results"][0]["status"] == "accepted"

    batch = [
        event(customer_id, "viewed", event_id=first),  # stored before
        event(customer_id, "clicked", event_id=second),
        {"customer_id": customer_id},  # no name
        event(customer_id, "clicked", event_id=second),  # twice in this batch
        event("bad id with spaces", "clicked"),
        event(customer_id, "clicked", occurred_at="yesterday"),
        "not an object",
        event(customer_id, "generated-id"),
    ]
    response = await stack.http.post("/v1/events", json={"events": batch})
    assert response.status_code == 202, response.text
    body = response.json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["duplicate", "accepted", "invalid", "duplicate", "invalid", "invalid", "invalid", "accepted"]
    assert [r["index"] for r in body["results"]] == list(range(len(batch)))
    assert (body["accepted"], body["duplicates"], body["invalid"]) == (2, 2, 4)
    fields = [r["error"]["field"] for r in body["results"] if r["status"] == "invalid"]
    assert fields == ["name", "customer_id", "occurred_at", None]
    assert body["results"][7]["event_id"]  # generated
    for result in body["results"]:
        if result["status"] == "accepted":
            assert await event_store.get_event(stack.pool, result["event_id"]) is not None


async def test_same_event_twice_is_stored_and_routed_once(stack: Stack) -> None:
    journey = stack.journey()
    await stack.publish(journey)
    customer_id = await stack.customer()
    trigger = event(customer_id, journey["trigger"]["event"], event_id=str(uuid.uuid4()), properties={"n": 1})

    first = await stack.http.post("/v1/events", json=trigger)
    second = await stack.http.post("/v1/events", json=trigger)
    assert first.json()["results"][0]["status"] == "accepted"
    assert second.json()["results"][0] == {
        "index": 0,
        "event_id": trigger["event_id"],
        "status": "duplicate",
        "customer_id": customer_id,
        "routed": False,
        "error": None,
    }
    await stack.smtp.wait_for(1, timeout=15)
    # Exit the journey, then send the trigger again: a duplicate must not re-enter.
    handle = stack.client.get_workflow_handle(workflow_id(journey["id"], customer_id))
    await stack.http.post("/v1/events", json=event(customer_id, journey["goal"]["event"]))
    await handle.result()
    third = await stack.http.post("/v1/events", json=trigger)
    assert third.json()["results"][0]["status"] == "duplicate"
    runs = [w async for w in stack.client.list_workflows(f'WorkflowId = "{handle.id}"')]
    assert len(runs) == 1
    assert len(stack.smtp.messages) == 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdDp0ZXN0"}],
)
async def test_missing_or_wrong_api_key_is_401(stack: Stack, headers: dict[str, str]) -> None:
    stack.http.headers.pop("X-API-Key")
    for method, path in (("POST", "/v1/events"), ("GET", "/v1/journeys"), ("GET", "/v1/customers/x")):
        response = await stack.http.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["field"] == "authorization"
    ok = await stack.http.get("/v1/journeys", headers={"Authorization": "Bearer test-key"})
    assert ok.status_code == 200
    assert (await stack.http.get("/healthz")).status_code == 200


BAD_JOURNEY: dict[str, Any] = {
    "id": "bad-journey",
    "name": "Bad",
    "trigger": {"event": "x"},
    "steps": [
        {"id": "one", "type": "send", "channel": "fax", "template": {}},
        {"id": "two", "type": "wait"},
        {"id": "three", "type": "wait_for", "event": "y", "timeout": "1d", "on_event": "nowhere"},
    ],
}


@pytest.mark.parametrize("fmt", ["json", "yaml"])
async def test_invalid_journey_is_422_with_every_issue_by_step(stack: Stack, fmt: str) -> None:
    if fmt == "json":
        response = await stack.http.post("/v1/journeys", json=BAD_JOURNEY)
    else:
        response = await stack.http.post(
            "/v1/journeys", content=yaml.safe_dump(BAD_JOURNEY), headers={"Content-Type": "application/yaml"}
        )
    assert response.status_code == 422, response.text
    issues = response.json()["error"]["issues"]
    by_step = {(i["step"], i["field"]) for i in issues}
    assert ("one", "channel") in by_step and ("two", "duration") in by_step, issues

    # Reference errors come after the model is valid: fix the first two steps and the third one's shows.
    fixed = {**BAD_JOURNEY, "steps": [{"id": "two", "type": "wait", "duration": "1h"}, BAD_JOURNEY["steps"][2]]}
    response = await stack.http.post("/v1/journeys", json=fixed)
    assert response.status_code == 422
    [issue] = response.json()["error"]["issues"]
    assert (issue["step"], issue["field"]) == ("three", "on_event")


async def test_publish_yaml_versions_and_identical_republish(stack: Stack) -> None:
    journey = stack.journey()
    text = yaml.safe_dump(journey)
    first = await stack.http.post("/v1/journeys", content=text, headers={"Content-Type": "text/yaml"})
    assert first.status_code == 201 and first.json()["version"] == 1
    again = await stack.http.post("/v1/journeys", json=journey)
    assert again.status_code == 200 and again.json() == {**first.json(), "created": False}
    changed = await stack.http.post("/v1/journeys", json={**journey, "name": "Renamed"})
    assert changed.status_code == 201 and changed.json()["version"] == 2
    shown = (await stack.http.get(f"/v1/journeys/{journey['id']}")).json()
    assert shown["latest_version"] == 2 and shown["definition"]["name"] == "Renamed"
    listed = {j["id"]: j for j in (await stack.http.get("/v1/journeys")).json()}
    assert listed[journey["id"]]["latest_version"] == 2
    assert (await stack.http.get("/v1/journeys/nope")).status_code == 404


async def test_oversized_and_malformed_bodies(stack: Stack) -> None:
    limit = stack.settings.max_body_bytes
    big = {"customer_id": "c", "name": "n", "properties": {"blob": "x" * limit}}
    response = await stack.http.post("/v1/events", json=big)
    assert response.status_code == 413 and response.json()["error"]["field"] == "body"

    async def chunks():  # no Content-Length: counted as it streams
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    response = await stack.http.post("/v1/events", content=chunks())
    assert response.status_code == 413

    for body in (b"{not json", b"", b"\xff\xfe", b"[1, 2]", b'{"events": 3}', b"null"):
        response = await stack.http.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code in (400, 422), (body, response.text)
        assert response.json()["error"]["message"]
    response = await stack.http.post(
        "/v1/events", json={"events": [event("c", "n")] * (stack.settings.max_batch_events + 1)}
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "events"
    response = await stack.http.put("/v1/customers/has space", json={})
    assert response.status_code == 422 and response.json()["error"]["field"] == "customer_id"
    response = await stack.http.put("/v1/customers/ok", json={"timezone": "Mars/Olympus"})
    assert response.status_code == 422 and response.json()["error"]["field"] == "timezone"
    response = await stack.http.post("/v1/customers/ok/inbox/99999999999999999999/read")
    assert response.status_code == 422


async def test_customer_profile_consent_and_inbox(stack: Stack) -> None:
    customer_id = unique("cust")
    assert (await stack.http.get(f"/v1/customers/{customer_id}")).status_code == 404
    response = await stack.http.put(f"/v1/customers/{customer_id}/consent", json={"channels": {"email": "granted"}})
    assert response.status_code == 404
    body = {"email": "a@example.com", "timezone": "Europe/Paris", "attributes": {"plan": "pro", "n": 1}}
    assert (await stack.http.put(f"/v1/customers/{customer_id}", json=body)).status_code == 200
    response = await stack.http.put(f"/v1/customers/{customer_id}", json={"attributes": {"n": 2}})
    profile = response.json()
    assert profile["email"] == "a@example.com" and profile["attributes"] == {"plan": "pro", "n": 2}

    changes = {"channels": {"email": "granted", "sms": "withdrawn"}, "topics": {"news": "granted"}}
    assert (await stack.http.put(f"/v1/customers/{customer_id}/consent", json=changes)).status_code == 200
    await stack.http.put(f"/v1/customers/{customer_id}/consent", json={"topics": {"news": "withdrawn"}})
    consent = (await stack.http.get(f"/v1/customers/{customer_id}/consent")).json()
    assert consent == {"channels": {"email": "granted", "sms": "withdrawn"}, "topics": {"news": "withdrawn"}}
    bad = await stack.http.put(f"/v1/customers/{customer_id}/consent", json={"channels": {"email": "maybe"}})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "channels.email"

    message_id = await stack.pool.fetchval(
        "INSERT INTO inbox_messages (customer_id, idempotency_key, title, body) VALUES ($1, $2, 'Hi', 'Body') "
        "RETURNING id",
        customer_id,
        unique("key"),
    )
    [message] = (await stack.http.get(f"/v1/customers/{customer_id}/inbox?unread=true")).json()
    assert message["id"] == message_id and message["read_at"] is None
    read = await stack.http.post(f"/v1/customers/{customer_id}/inbox/{message_id}/read")
    assert read.status_code == 200 and read.json()["read_at"]
    assert (await stack.http.get(f"/v1/customers/{customer_id}/inbox?unread=true")).json() == []
    assert (await stack.http.post(f"/v1/customers/other/inbox/{message_id}/read")).status_code == 404


async def test_paused_journey_takes_no_new_entries_until_resumed(stack: Stack) -> None:
    journey = stack.journey()
    await stack.publish(journey)
    paused = await stack.http.post(f"/v1/journeys/{journey['id']}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    customer_id = await stack.customer()
    trigger = journey["trigger"]["event"]
    response = await stack.http.post("/v1/events", json=event(customer_id, trigger))
    assert response.json()["results"][0]["status"] == "accepted"
    handle = stack.client.get_workflow_handle(workflow_id(journey["id"], customer_id))
    with pytest.raises(RPCError):
        await handle.describe()

    resumed = await stack.http.post(f"/v1/journeys/{journey['id']}/resume")
    assert resumed.json()["status"] == "active"
    await stack.http.post("/v1/events", json=event(customer_id, trigger))
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert (await stack.http.post("/v1/journeys/nope/pause")).status_code == 404


async def test_readiness(stack: Stack) -> None:
    response = await stack.http.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"postgres": "ok", "temporal": "ok"}
    paths = (await stack.http.get("/openapi.json")).json()["paths"]
    assert "/v1/events" in paths and "/v1/customers/{customer_id}/journeys" in paths


async def test_postgres_unreachable_is_503_not_500(dev_env: WorkflowEnvironment) -> None:
    dead = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/none", min_size=0)
    app = create_app(make_settings(), pool=dead, client=dev_env.client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-API-Key": API_KEY}) as http:
        for method, path, body in (
            ("GET", "/v1/customers/someone", None),
            ("POST", "/v1/events", {"customer_id": "someone", "name": "clicked"}),
            ("GET", "/readyz", None),
        ):
            response = await http.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
    await dead.close()
