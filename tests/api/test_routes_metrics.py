"""GET /metrics (api.routes_metrics, config.metrics): what an operator's Prometheus sees after real traffic, and
every Parcours metric that deploy/'s alert rules and dashboard name is there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.stack import Stack, eventually, stack_fixture  # noqa: F401  (registers the fixture)

pytestmark = pytest.mark.devserver

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# The share attribute decides whether the subject renders: 0 makes Liquid divide by zero (a failed step).
SUBJECT = "Hello {% if customer.share != nil %}{{ 100 | divided_by: customer.share }}{% endif %}"


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for every sample line of Prometheus' text format."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def value(found: dict[str, float], name: str, **labels: str) -> float:
    """The one sample of ``name`` carrying at least ``labels``."""
    hits = [
        v
        for key, v in found.items()
        if key.split("{", 1)[0] == name and all(f'{k}="{v_}"' in key for k, v_ in labels.items())
    ]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


async def scrape(stack: Stack) -> dict[str, float]:
    response = await stack.http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_metrics_need_a_read_key_unless_public(stack: Stack) -> None:
    anonymous = await stack.http.get("/metrics", headers={"X-API-Key": ""})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["field"] == "authorization"
    stack.app.state.settings = stack.settings.model_copy(update={"metrics_public": True})
    try:
        public = await stack.http.get("/metrics", headers={"X-API-Key": ""})
    finally:
        stack.app.state.settings = stack.settings
    assert public.status_code == 200
    assert "parcours_outbox_events " in public.text


async def test_traffic_shows_on_metrics_and_every_metric_deploy_names_exists(stack: Stack) -> None:
    journey = stack.journey()
    tag = journey["id"].removeprefix("j-")
    journey["exit_when"] = [{"event": f"leave-{tag}", "reason": "left"}]
    journey["steps"][0]["template"]["subject"] = SUBJECT
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    fine, broken = await stack.customer(), await stack.customer()
    for customer_id, share in ((fine, 4), (broken, 0)):
        response = await stack.http.put(f"/v1/customers/{customer_id}", json={"attributes": {"share": share}})
        assert response.status_code == 200, response.text
    before = await scrape(stack)

    start = {"customer_id": fine, "name": f"start-{tag}", "event_id": f"start-{tag}-fine"}
    batch = [
        start,
        {"customer_id": broken, "name": f"start-{tag}"},
        {"customer_id": fine, "name": ""},  # invalid: no name
    ]
    first = (await stack.http.post("/v1/events", json={"events": batch})).json()
    assert (first["accepted"], first["invalid"]) == (2, 1)
    again = (await stack.http.post("/v1/events", json=start)).json()
    assert again["duplicates"] == 1

    async def both_decided() -> bool:
        rows = await stack.pool.fetch("SELECT status FROM messages WHERE journey_id = $1", journey["id"])
        return len(rows) == 2

    await eventually(both_decided, timeout=20)
    await stack.http.post("/v1/events", json={"customer_id": fine, "name": f"goal-{tag}"})
    await stack.http.post("/v1/events", json={"customer_id": broken, "name": f"leave-{tag}"})

    async def settled() -> dict[str, float]:
        found = await scrape(stack)
        assert value(found, "parcours_conversions_total", journey=journey["id"]) == 1
        assert value(found, "parcours_exits_total", journey=journey["id"]) == 1
        return found

    after = await eventually(settled, timeout=20)
    assert value(after, "parcours_entries_total", journey=journey["id"], source="trigger") == 2
    assert value(after, "parcours_failed_steps_total", journey=journey["id"], step_type="send") == 1
    for status, more in (("accepted", 4), ("duplicate", 1), ("invalid", 1)):
        grew = value(after, "parcours_events_total", status=status) - value(
            before, "parcours_events_total", status=status
        )
        assert grew >= more, status  # other tests share the process: at least ours
    sent = value(after, "parcours_sends_total", channel="email", status="sent", reason="")
    failed = value(after, "parcours_sends_total", channel="email", status="failed", reason="template_error")
    assert sent >= 1 and failed >= 1
    assert value(after, "parcours_provider_seconds_count", channel="email", result="ok") >= 1
    assert value(after, "parcours_event_routing_seconds_count") >= 4
    assert value(after, "parcours_outbox_events") >= 0

    named = set()
    for path in [*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.json")]:
        named |= set(re.findall(r"\bparcours_[a-z_]+", path.read_text()))
    assert len(named) >= 10, named  # the dashboard and the alerts exist and use the metrics
    exposed = {key.split("{", 1)[0] for key in after}
    assert sorted(named - exposed) == []
