"""Measurement end to end on the time-skipping server: 200 customers enter a journey with a holdout and an A/B
split through the API, get real emails, click the real tracked links in them, and some place orders; the report,
the experiments and the attribution answer what the test counted by hand."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from contracts.journey import workflow_id
from journeys import parse_journey
from measurement.arms import ArmInput
from measurement.experiments import analyze
from store import journeys as journey_store
from tests.support.engine import make_customer, running_engine
from tests.support.mail import SmtpSink
from tests.support.stack import API_KEY, eventually
from workflows.bucketing import bucket

CUSTOMERS = 200
HOLDOUT_PERCENT = 20
TRACKED = re.compile(r"http://localhost:8000(/c/[A-Za-z0-9_-]+)")


def definition(tag: str) -> dict[str, Any]:
    return {
        "id": f"measure-{tag}",
        "name": "Measure",
        "trigger": {"event": f"start-{tag}"},
        "goal": {"event": f"order-{tag}", "value_property": "total"},
        "holdout": {"percent": HOLDOUT_PERCENT, "observe_for": "1h"},
        "steps": [
            {"id": "subject", "type": "split", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
            {
                "id": "hello",
                "type": "send",
                "channel": "email",
                "template": {
                    "subject": f"Hello {tag}",
                    "text": "Your cart: https://shop.test/cart?c={{ customer.id }}",
                },
            },
            {"id": "linger", "type": "wait", "duration": "1h"},
        ],
    }


def arm_of(journey_id: str, customer: str) -> str:
    if bucket(journey_id, customer, "holdout") < HOLDOUT_PERCENT / 100:
        return "holdout"
    return "a" if bucket(journey_id, customer, "subject") * 2 < 1 else "b"


async def test_report_experiments_and_attribution_equal_the_hand_counts(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:8]
    journey = parse_journey(definition(tag))
    await journey_store.publish(pool, journey)
    customers = [await make_customer(pool) for _ in range(CUSTOMERS)]
    arms = {c: arm_of(journey.id, c) for c in customers}
    # Who converts (and for how much) and who clicks, chosen by position within each arm.
    position = {c: [x for x in customers if arms[x] == arms[c]].index(c) for c in customers}
    every = {"a": 3, "b": 2, "holdout": 5}
    orders = {c: round(10.1 + position[c] * 0.7, 2) for c in customers if position[c] % every[arms[c]] == 0}
    clicks = [c for c in customers if arms[c] != "holdout" and position[c] % 4 == 1]

    async with (
        running_engine(time_skipping_env, pool, smtp_sink, api_keys=[API_KEY]) as engine,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(engine.settings, pool=pool, client=engine.client)),
            base_url="http://parcours.test",
            headers={"X-API-Key": API_KEY},
        ) as api,
    ):
        starts = [{"customer_id": c, "name": f"start-{tag}"} for c in customers]
        for batch in range(0, CUSTOMERS, 50):
            answer = await api.post("/v1/events", json={"events": starts[batch : batch + 50]})
            assert answer.status_code == 202, answer.text

        treated = [c for c in customers if arms[c] != "holdout"]

        async def all_mailed() -> bool:
            return all(engine.mail_to(c) for c in treated) or None  # type: ignore[return-value]

        await eventually(all_mailed, timeout=120)
        for c in clicks:
            [link] = TRACKED.findall(engine.mail_to(c)[0].get_body(("plain",)).get_content())
            answer = await api.get(link, headers={"X-API-Key": ""})
            assert answer.status_code == 302 and answer.headers["location"] == f"https://shop.test/cart?c={c}"
        tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
        answer = await api.get(tampered)
        assert answer.status_code == 400 and "location" not in answer.headers

        order_events = [
            {"customer_id": c, "name": f"order-{tag}", "properties": {"total": v}} for c, v in orders.items()
        ]
        answer = await api.post("/v1/events", json={"events": order_events})
        assert answer.status_code == 202, answer.text
        handles = [engine.client.get_workflow_handle(workflow_id(journey.id, c)) for c in customers]
        await time_skipping_env.sleep(timedelta(hours=2))  # the waits and the holdout's observation end
        results = [await h.result() for h in handles]
        assert sum(r["status"] == "converted" for r in results) == len(orders)

        report = (await api.get(f"/v1/journeys/{journey.id}/report")).json()
        experiments = (await api.get(f"/v1/journeys/{journey.id}/experiments")).json()
        csv_answer = await api.get(f"/v1/journeys/{journey.id}/experiments", headers={"Accept": "text/csv"})
        last = (await api.get("/v1/attribution", params={"event": f"order-{tag}", "value": "total"})).json()
        linear = (
            await api.get(
                "/v1/attribution",
                params={"event": f"order-{tag}", "value": "total", "model": "linear", "clicked_only": "true"},
            )
        ).json()
        bad = await api.get("/v1/attribution", params={"event": "x", "value": "total", "model": "magic"})
        bad_window = await api.get("/v1/attribution", params={"event": "x", "value": "total", "window": "soon"})

    def hand(arm: str) -> ArmInput:
        members = [c for c in customers if arms[c] == arm]
        bought = [c for c in members if c in orders]
        revenue = float(sum(Decimal(str(orders[c])) for c in bought))
        return ArmInput(
            name=arm, entered=len(members), converted=len(bought), revenue=revenue, holdout=arm == "holdout"
        )

    holdout, a, b = hand("holdout"), hand("a"), hand("b")
    total_revenue = float(sum(Decimal(str(v)) for v in orders.values()))

    # The report.
    assert report["entered"] == CUSTOMERS
    assert report["conversions"]["converted"] == len(orders)
    assert report["conversions"]["revenue"] == total_revenue
    [hello] = [s for s in report["steps"] if s["step_id"] == "hello"]
    assert (hello["funnel"]["sent"], hello["funnel"]["clicked"]) == (len(treated), len(clicks))
    assert {(x["variant"], x["entered"], x["converted"]) for x in report["arms"]} == {
        (arm.name, arm.entered, arm.converted) for arm in (holdout, a, b)
    }

    # The experiments: the split against the holdout, and the holdout against everyone treated.
    by_step = {e["step_id"]: e for e in experiments["experiments"]}
    split = by_step["subject"]["result"]
    assert split["control"] == "holdout"
    assert [(x["name"], x["entered"], x["converted"], x["revenue"]) for x in split["arms"]] == [
        (arm.name, arm.entered, arm.converted, arm.revenue) for arm in (holdout, a, b)
    ]
    expected = analyze([holdout, a, b])
    for got, want in zip(split["comparisons"], expected.comparisons, strict=True):
        assert (got["arm"], got["lift_abs"], got["p_value"]) == (want.arm, want.lift_abs, want.p_value)
    assert split["verdict"] == expected.verdict
    everyone = ArmInput(name="treated", entered=a.entered + b.entered, converted=a.converted + b.converted,
                        revenue=float(Decimal(str(a.revenue)) + Decimal(str(b.revenue))))  # fmt: skip
    assert (
        by_step["$holdout"]["result"]["comparisons"][0]["lift_abs"]
        == analyze([holdout, everyone]).comparisons[0].lift_abs
    )
    assert csv_answer.headers["content-type"].startswith("text/csv")
    assert len(csv_answer.text.strip().splitlines()) == 1 + 3 + 2

    # Attribution: every order's credits sum to its value; treated orders go to the one email, held-out ones to none.
    treated_orders = [c for c in orders if arms[c] != "holdout"]
    [row] = last["report"]["rows"]
    assert (row["journey"], row["step"], row["channel"]) == (journey.id, "hello", "email")
    assert row["attributed_conversions"] == len(treated_orders)
    assert round(row["attributed_revenue"], 6) == round(sum(orders[c] for c in treated_orders), 6)
    assert last["report"]["unattributed_conversions"] == len(orders) - len(treated_orders)
    assert round(row["attributed_revenue"] + last["report"]["unattributed_revenue"], 6) == round(total_revenue, 6)
    clicked_orders = [c for c in treated_orders if c in clicks]
    [clicked_row] = linear["report"]["rows"]  # every touch counts in its row; only clicked ones get credit
    assert clicked_row["attributed_conversions"] == len(clicked_orders)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "model"
    assert bad_window.status_code == 422 and bad_window.json()["error"]["field"] == "window"
