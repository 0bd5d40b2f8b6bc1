"""The journey report, end to end: two dozen customers go through a real journey (API, router, worker, dev server,
PostgreSQL, SMTP sink) with outcomes chosen by the test, and the report says what the test counted."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus
from typer.testing import CliRunner

from cli.main import app
from contracts.journey import STATE_QUERY, JourneyState, workflow_id
from store import reports
from tests.support.stack import Stack, eventually, stack_fixture  # noqa: F401  (registers the fixture)
from workflows.bucketing import bucket

pytestmark = pytest.mark.devserver

HOLDOUT_PERCENT = 20
# What each customer does once they wait for the click, per split variant; the held-out customers buy or wait.
PLAN = {
    "a": ["click", "click", "buy", "buy", "buy", "stop", "idle", "idle", "idle", "no_consent"],
    "b": ["click", "click", "buy", "buy", "stop", "stop", "idle", "idle", "idle", "no_consent"],
    "holdout": ["buy", "buy", "idle", "idle"],
}


def definition(tag: str) -> dict[str, Any]:
    return {
        "id": f"rep-{tag}",
        "name": f"Report {tag}",
        "trigger": {"event": f"start-{tag}"},
        "goal": {"event": f"buy-{tag}", "value_property": "total"},
        "exit_when": [{"event": f"stop-{tag}", "reason": "asked to stop"}],
        "holdout": {"percent": HOLDOUT_PERCENT, "observe_for": "1h"},
        "steps": [
            {"id": "subject", "type": "split", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
            {
                "id": "hello",
                "type": "send",
                "channel": "email",
                "template": {"subject": f"Hello {tag}", "text": "Have a look."},
            },
            {
                "id": "await-click",
                "type": "wait_for",
                "event": "email_clicked",
                "timeout": "1h",
                "on_event": "thanks",
                "on_timeout": "end",
            },
            {"id": "thanks", "type": "exit", "reason": "clicked"},
        ],
    }


def arm(journey_id: str, customer_id: str) -> str:
    """The arm the workflow will put the customer in (same buckets as the workflow)."""
    if bucket(journey_id, customer_id, "holdout") < HOLDOUT_PERCENT / 100:
        return "holdout"
    return "a" if bucket(journey_id, customer_id, "subject") * 2 < 1 else "b"


def cast(journey_id: str, tag: str) -> Iterator[tuple[str, str, str]]:
    """(customer id, arm, behaviour) filling PLAN with customer ids whose buckets fall in each arm."""
    wanted = {name: list(behaviours) for name, behaviours in PLAN.items()}
    n = 0
    while any(wanted.values()):
        customer_id = f"c{n}-{tag}"
        n += 1
        name = arm(journey_id, customer_id)
        if wanted[name]:
            yield customer_id, name, wanted[name].pop()


async def post_events(stack: Stack, events: list[dict[str, Any]]) -> None:
    response = await stack.http.post("/v1/events", json={"events": events})
    assert response.status_code == 202, response.text
    assert {r["status"] for r in response.json()["results"]} == {"accepted"}, response.text


async def wait_at(stack: Stack, journey_id: str, customer_id: str, step: str) -> None:
    handle = stack.client.get_workflow_handle(workflow_id(journey_id, customer_id))

    async def there() -> bool:
        state = await handle.query(STATE_QUERY, result_type=JourneyState)
        assert state.current_step == step, state.current_step
        return True

    await eventually(there, timeout=30)


async def test_report_counts_what_the_customers_did(stack: Stack, database_url: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    journey = definition(tag)
    jid = journey["id"]
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    customers = list(cast(jid, tag))
    by = {(c, a, b) for c, a, b in customers}
    for customer_id, _, behaviour in customers:
        response = await stack.http.put(f"/v1/customers/{customer_id}", json={"email": f"{customer_id}@example.com"})
        assert response.status_code == 200, response.text
        if behaviour != "no_consent":
            consent = {"channels": {"email": "granted"}}
            assert (await stack.http.put(f"/v1/customers/{customer_id}/consent", json=consent)).status_code == 200
    await post_events(stack, [{"customer_id": c, "name": f"start-{tag}"} for c, _, _ in customers])
    for customer_id, name, _ in customers:
        await wait_at(stack, jid, customer_id, "$holdout" if name == "holdout" else "await-click")

    keys = {
        r["customer_id"]: r["idempotency_key"]
        for r in await stack.pool.fetch("SELECT customer_id, idempotency_key FROM messages WHERE journey_id = $1", jid)
    }
    totals: dict[str, float] = {}
    behaviour_events = []
    for i, (customer_id, _, behaviour) in enumerate(sorted(customers)):
        if behaviour == "buy":
            totals[customer_id] = 10.0 * (i + 1)
            behaviour_events.append(
                {"customer_id": customer_id, "name": f"buy-{tag}", "properties": {"total": 10.0 * (i + 1)}}
            )
        elif behaviour == "stop":
            behaviour_events.append({"customer_id": customer_id, "name": f"stop-{tag}"})
        elif behaviour == "click":
            behaviour_events.append(
                {"customer_id": customer_id, "name": "email_clicked", "properties": {"message_key": keys[customer_id]}}
            )
    idle = sorted(c for c, name, b in customers if b == "idle" and name != "holdout")
    clickers = sorted(c for c, _, b in customers if b == "click")
    opens = [(idle[0], True), (idle[1], False), (clickers[0], False), (clickers[0], True)]
    behaviour_events += [
        {"customer_id": c, "name": "email_opened", "properties": {"message_key": keys[c], "machine": machine}}
        for c, machine in opens
    ]
    await post_events(stack, behaviour_events)
    for customer_id, _, behaviour in customers:
        if behaviour in ("buy", "click", "stop"):
            await stack.client.get_workflow_handle(workflow_id(jid, customer_id)).result()
    # One idle customer's address bounces; another unsubscribes with the link in the email.
    bounce = {"type": "hard_bounce", "channel": "email", "address": f"{idle[2]}@example.com"}
    assert (await stack.http.post("/v1/providers/generic/events", json=bounce)).status_code == 200
    [mail] = [m for m in stack.smtp.messages if f"{idle[3]}@example.com" in m.rcpt_tos]
    unsubscribe = "/" + mail.message["List-Unsubscribe"].strip("<>").split("/", 3)[3]
    form = {"List-Unsubscribe": "One-Click"}
    assert (await stack.http.post(unsubscribe, data=form)).status_code == 200

    def count(arm_name: str | None = None, behaviour: str | None = None, consent: bool | None = None) -> int:
        return sum(
            1
            for c, a, b in by
            if (arm_name is None or a == arm_name)
            and (behaviour is None or b == behaviour)
            and (consent is None or (b != "no_consent") == consent)
        )

    async def settled() -> dict[str, Any]:
        response = await stack.http.get(f"/v1/journeys/{jid}/report")
        assert response.status_code == 200, response.text
        body = response.json()
        waiting = {s["step_id"]: s["waiting_now"] for s in body["steps"]}
        assert waiting["await-click"] == 8 and waiting["$holdout"] == 2, waiting
        return body

    report = await eventually(settled, timeout=20)
    steps = {s["step_id"]: s for s in report["steps"]}
    assert [s["step_id"] for s in report["steps"]] == ["$holdout", "subject", "hello", "await-click", "thanks", "$exit"]
    assert report["entered"] == len(customers) == 24
    assert report["waiting_note"] is None

    split = steps["subject"]
    assert split["reached"] == 20 and split["waiting_now"] == 0
    assert split["outcomes"] == [
        {"outcome": "a", "reason": None, "count": 10},
        {"outcome": "b", "reason": None, "count": 10},
    ]
    hello = steps["hello"]
    assert hello["reached"] == 20
    assert hello["outcomes"] == [
        {"outcome": "sent", "reason": None, "count": 18},
        {"outcome": "skipped", "reason": None, "count": 2},
        {"outcome": "skipped", "reason": "no_consent:email", "count": 2},
    ]
    funnel = hello["funnel"]
    assert {k: funnel[k] for k in ("messages", "sent", "skipped", "failed", "delivered", "bounced")} == {
        "messages": 20,
        "sent": 18,
        "skipped": 2,
        "failed": 0,
        "delivered": 17,
        "bounced": 1,
    }
    assert (funnel["opened"], funnel["opened_human"], funnel["clicked"], funnel["unsubscribed"]) == (3, 2, 4, 1)
    assert funnel["cost"] == pytest.approx(18 * stack.settings.channel_costs["email"])
    assert [c["channel"] for c in funnel["by_channel"]] == ["email"]

    wait = steps["await-click"]
    assert wait["reached"] == count(behaviour="click") + count("a", "buy") + count("b", "buy") + count(behaviour="stop")
    assert wait["outcomes"] == [
        {"outcome": "goal", "reason": None, "count": 5},
        {"outcome": "event", "reason": None, "count": 4},
        {"outcome": "exit", "reason": None, "count": 3},
    ]
    assert steps["thanks"]["reached"] == 4
    assert steps["$holdout"]["outcomes"] == [{"outcome": "converted", "reason": None, "count": 2}]
    assert report["exits"] == [{"reason": "clicked", "count": 4}, {"reason": "asked to stop", "count": 3}]

    conversions = report["conversions"]
    assert conversions["converted"] == 7
    assert conversions["revenue"] == pytest.approx(sum(totals.values()))
    assert conversions["conversion_rate"] == pytest.approx(7 / 24)
    assert 0 < conversions["median_time_to_convert_seconds"] < 600

    def revenue(arm_name: str) -> float:
        return sum(v for c, v in totals.items() if arm(jid, c) == arm_name)

    assert [(a["step_id"], a["variant"], a["entered"], a["converted"]) for a in report["arms"]] == [
        ("$holdout", "holdout", 2, 2),
        ("subject", "a", 10, 3),
        ("subject", "b", 10, 2),
    ]
    assert [a["revenue"] for a in report["arms"]] == pytest.approx([revenue("holdout"), revenue("a"), revenue("b")])
    direct = await reports.experiment_arms(stack.pool, jid)
    assert [(a.variant, a.entered, a.converted) for a in direct] == [("holdout", 2, 2), ("a", 10, 3), ("b", 10, 2)]

    # Filters: a variant keeps the entries that took it; waiting_now too.
    only_b = (await stack.http.get(f"/v1/journeys/{jid}/report", params={"variant": "b"})).json()
    b_steps = {s["step_id"]: s for s in only_b["steps"]}
    assert only_b["entered"] == 10 and only_b["conversions"]["converted"] == 2
    assert b_steps["hello"]["funnel"]["sent"] == 9 and b_steps["await-click"]["waiting_now"] == 4
    opened_b = {c for c, _ in opens if arm(jid, c) == "b"}
    assert (b_steps["hello"]["funnel"]["opened"], b_steps["hello"]["funnel"]["clicked"]) == (len(opened_b), 2)
    assert only_b["exits"] == [{"reason": "asked to stop", "count": 2}, {"reason": "clicked", "count": 2}]
    today = datetime.now(UTC).date()
    same = (
        await stack.http.get(f"/v1/journeys/{jid}/report", params={"since": str(today), "until": str(today)})
    ).json()
    assert same["entered"] == 24 and same["conversions"]["converted"] == 7
    before = (
        await stack.http.get(f"/v1/journeys/{jid}/report", params={"until": str(today - timedelta(days=1))})
    ).json()
    assert before["entered"] == 0 and {s["reached"] for s in before["steps"]} == {0}
    assert before["conversions"] == {
        "converted": 0,
        "revenue": 0.0,
        "conversion_rate": None,
        "median_time_to_convert_seconds": None,
    }
    v1 = (await stack.http.get(f"/v1/journeys/{jid}/report", params={"version": 1})).json()
    assert v1["entered"] == 24 and v1["definition_version"] == 1

    # CSV: one row per step and outcome (and reason), the journey's totals first.
    response = await stack.http.get(f"/v1/journeys/{jid}/report", headers={"Accept": "text/csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {(r["outcome"], r["value"]) for r in rows if r["step_id"] == "$journey"} >= {
        ("entered", "24"),
        ("converted", "7"),
    }
    hello_rows = [r for r in rows if r["step_id"] == "hello"]
    assert [(r["outcome"], r["reason"], r["value"]) for r in hello_rows] == [
        ("sent", "", "18"),
        ("skipped", "", "2"),
        ("skipped", "no_consent:email", "2"),
    ]
    assert {(r["reached"], r["sent"], r["delivered"], r["opened_human"], r["clicked"]) for r in hello_rows} == {
        ("20", "18", "17", "2", "4")
    }
    assert [r["waiting_now"] for r in rows if r["step_id"] == "await-click"] == ["8"] * 3

    # The channel KPIs include this journey's messages.
    channels = await stack.http.get("/v1/reports/channels", params={"since": str(today)})
    assert channels.status_code == 200
    email = next(c for c in channels.json()["channels"] if c["channel"] == "email")
    assert email["sent"] >= 18 and email["clicked"] >= 4

    # The command line prints the same figures as tables.
    env = {
        "PARCOURS_DATABASE_URL": database_url,
        "PARCOURS_TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "PARCOURS_DATA_DIR": str(tmp_path),
        "COLUMNS": "200",
    }
    printed = await asyncio.to_thread(CliRunner().invoke, app, ["journeys", "report", jid], env=env)
    assert printed.exit_code == 0, printed.output
    assert "Entered 24 · converted 7 (29.2%)" in printed.output
    assert "no_consent:email: 2" in printed.output and "asked to stop" in printed.output
    hello_line = next(line for line in printed.output.splitlines() if "│ hello " in line and "email" in line)
    assert "│ 18 " in hello_line and "│ 17 " in hello_line and "3 (2)" in hello_line
    unknown = await asyncio.to_thread(CliRunner().invoke, app, ["journeys", "report", "nope"], env=env)
    assert unknown.exit_code == 1 and "unknown journey 'nope'" in unknown.output

    # The runs still waiting are still running: the report read them, it did not change them.
    description = await stack.client.get_workflow_handle(workflow_id(jid, idle[0])).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING


async def test_report_errors_name_the_field(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    journey = definition(tag)
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    path = f"/v1/journeys/{journey['id']}/report"

    unknown = await stack.http.get("/v1/journeys/no-such-journey/report")
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "journey_id"
    no_version = await stack.http.get(path, params={"version": 2})
    assert no_version.status_code == 404 and no_version.json()["error"]["field"] == "version"
    for params, field in (
        ({"since": "2026-13-01"}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"since": "2026-02-01", "until": "2026-01-31"}, "until"),
        ({"version": "0"}, "version"),
        ({"variant": "a'b"}, "variant"),
    ):
        response = await stack.http.get(path, params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["field"] == field
    bad_channels = await stack.http.get("/v1/reports/channels", params={"since": "2026-02-30"})
    assert bad_channels.status_code == 422 and bad_channels.json()["error"]["field"] == "since"
    # Nobody entered yet: zeros, not errors; no customer is waiting anywhere.
    empty = (await stack.http.get(path)).json()
    assert empty["entered"] == 0 and empty["conversions"]["conversion_rate"] is None
    assert {s["waiting_now"] for s in empty["steps"]} == {0}


async def test_experiments_errors_name_the_field(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    journey = definition(tag)
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    path = f"/v1/journeys/{journey['id']}/experiments"

    unknown = await stack.http.get("/v1/journeys/no-such-journey/experiments")
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "journey_id"
    no_version = await stack.http.get(path, params={"version": 2})
    assert no_version.status_code == 404 and no_version.json()["error"]["field"] == "version"
    for params, field in (
        ({"since": "2026-13-01"}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"since": "2026-02-01", "until": "2026-01-31"}, "until"),
        ({"version": "0"}, "version"),
        ({"version": "99999999999"}, "version"),
    ):
        response = await stack.http.get(path, params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["field"] == field
    # A known journey nobody entered: a report with no experiment, not an error.
    empty = await stack.http.get(path, params={"version": 1})
    assert empty.status_code == 200 and empty.json()["experiments"] == []


async def test_attribution_errors_name_the_field(stack: Stack) -> None:
    for params, field in (
        ({}, "event"),
        ({"event": "order_placed"}, "value"),
        ({"event": "order_placed", "value": "total", "model": "causal"}, "model"),
        ({"event": "order_placed", "value": "total", "window": "a week"}, "window"),
        ({"event": "order_placed", "value": "total", "window": "400d"}, "window"),
        ({"event": "order_placed", "value": "total", "model": "time_decay", "half_life": "-1d"}, "half_life"),
        ({"event": "order_placed", "value": "total", "since": "2026-02-30"}, "since"),
        ({"event": "order_placed", "value": "total", "since": "2026-02-02", "until": "2026-02-01"}, "until"),
        ({"event": "order_placed", "value": "total", "clicked_only": "maybe"}, "clicked_only"),
    ):
        response = await stack.http.get("/v1/attribution", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["field"] == field, (params, response.text)
