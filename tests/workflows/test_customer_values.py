"""The customer-value refresh on the time-skipping server: orders in, values out, used by journeys."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest

from contracts.customer_values import CustomerValuesInput, CustomerValuesResult
from measurement.clv import customer_values
from store import customer_values as value_store
from tests.support.engine import Engine, journey_from, make_customer
from workflows.customer_values import CustomerValueWorkflow


async def add_orders(engine: Engine, orders: list[tuple[str, datetime, Any]], name: str) -> None:
    await engine.pool.executemany(
        "INSERT INTO events (event_id, customer_id, name, properties, occurred_at, routed_at)"
        " VALUES ($1, $2, $3, $4, $5, now())",
        [(f"ev-{uuid.uuid4().hex}", c, name, {"total": v} if v is not None else {}, t) for c, t, v in orders],
    )


async def refresh(engine: Engine, order_event: str, **options: Any) -> CustomerValuesResult:
    return await engine.client.execute_workflow(
        CustomerValueWorkflow.run,
        CustomerValuesInput(order_event=order_event, **options),
        id=f"customer-values-test-{uuid.uuid4().hex[:8]}",
        task_queue=engine.settings.task_queue,
    )


async def test_a_refresh_gives_customers_with_orders_their_values(engine: Engine) -> None:
    order_event = f"ordered-{uuid.uuid4().hex[:8]}"
    now = await engine.env.get_current_time()
    two, one, none = [await make_customer(engine.pool) for _ in range(3)]
    orders = [
        (two, now - timedelta(days=40), 30),
        (two, now - timedelta(days=10), 50.5),
        (one, now - timedelta(days=5), "not a number"),  # an order all the same, worth 0
        (one, now - timedelta(days=4), 20),
        (one, now + timedelta(days=30), 1000),  # after the refresh's instant: not counted
    ]
    await add_orders(engine, orders, order_event)
    await add_orders(engine, [(none, now - timedelta(days=1), 99)], "page_viewed")
    stale = await make_customer(engine.pool)
    await value_store.write_values(
        engine.pool,
        [value_store.ComputedValue(stale, 1, 1.0, now, now, 1.0, 1.0, "historical_rate", 1.0, None)],
        refresh_id="an-earlier-refresh",
        computed_at=now,
    )

    result = await refresh(engine, order_event, batch_size=50)

    assert result.model == "historical_rate" and result.customers_with_orders == 2
    assert result.removed >= 1 and await value_store.values_of(engine.pool, stale) is None
    assert await value_store.values_of(engine.pool, none) is None
    got = {c: await value_store.values_of(engine.pool, c) for c in (two, one)}
    assert (got[two]["orders_count"], got[two]["revenue"], got[two]["average_order_value"]) == (2, 80.5, 40.25)
    assert (got[one]["orders_count"], got[one]["revenue"], got[one]["average_order_value"]) == (2, 20.0, 10.0)
    assert datetime.fromisoformat(got[two]["first_order_at"]) == orders[0][1]
    assert datetime.fromisoformat(got[one]["last_order_at"]) == orders[3][1]
    assert datetime.fromisoformat(got[two]["computed_at"]) == result.as_of
    # The historical-rate fallback: 2 orders over max(age, horizon) = 365 days, at the average order value.
    assert got[two]["clv"] == pytest.approx(2 / 365 * 365 * 40.25)
    assert {got[c]["clv_model"] for c in got} == {"historical_rate"}


async def test_a_large_population_is_fitted_once_and_paged(engine: Engine) -> None:
    order_event = f"ordered-{uuid.uuid4().hex[:8]}"
    now = await engine.env.get_current_time()
    rng = np.random.default_rng(5)
    tag = uuid.uuid4().hex[:8]
    await engine.pool.executemany(
        "INSERT INTO customers (id) VALUES ($1)", [(f"bg-{tag}-{i:03d}",) for i in range(150)]
    )
    orders = []
    for i in range(150):
        rate, spend = rng.gamma(2, 0.25), rng.gamma(4, 10)
        week = rng.uniform(20, 40)
        while week > 0 and len([o for o in orders if o[0] == f"bg-{tag}-{i:03d}"]) < 12:
            orders.append((f"bg-{tag}-{i:03d}", now - timedelta(weeks=week), round(float(rng.gamma(5, spend / 5)), 2)))
            week -= rng.exponential(1 / rate)
            if rng.random() < 0.1:
                break
    await add_orders(engine, orders, order_event)

    result = await refresh(engine, order_event, batch_size=40, horizon_days=180)

    expected = customer_values(
        [{"customer": c, "time": t, "value": v} for c, t, v in orders], as_of=result.as_of, horizon=timedelta(days=180)
    )
    assert result.model == expected.model == "bg_nbd_gamma_gamma"
    for want in expected.customers:
        got = await value_store.values_of(engine.pool, want.customer)
        assert got is not None and got["orders_count"] == want.orders
        assert got["clv"] == pytest.approx(want.predicted_value, rel=1e-3)
        assert got["probability_alive"] == pytest.approx(want.probability_alive, rel=1e-3)


async def test_journeys_branch_on_and_show_the_computed_values(engine: Engine) -> None:
    order_event = f"ordered-{uuid.uuid4().hex[:8]}"
    now = await engine.env.get_current_time()
    loyal = await make_customer(engine.pool)
    once = await make_customer(engine.pool)
    # The customer's own attribute of that name is not the computed value.
    claims = await make_customer(engine.pool, attributes={"orders_count": 7})
    days = [60, 30, 2]
    await add_orders(engine, [(loyal, now - timedelta(days=d), 25.5) for d in days], order_event)
    await add_orders(engine, [(once, now - timedelta(days=3), 40)], order_event)
    await refresh(engine, order_event)

    mail = {"type": "send", "channel": "email", "next": "end"}
    journey = journey_from(
        {
            "id": "value",
            "name": "Value",
            "trigger": {"event": "visited"},
            "steps": [
                {
                    "id": "who",
                    "type": "branch",
                    "where": [{"field": "profile.orders_count", "op": "gte", "value": 2}],
                    "then": "thanks",
                    "else": "hello",
                },
                {
                    **mail,
                    "id": "thanks",
                    "template": {"subject": "{{ customer.orders_count }} orders, {{ customer.revenue }}", "text": "x"},
                },
                {
                    **mail,
                    "id": "hello",
                    "template": {"subject": "Hello {{ customer.orders_count | default: 'new' }}", "text": "x"},
                },
            ],
        }
    )
    for customer in (loyal, once, claims):
        handle = await engine.enter(journey, customer)
        await handle.result()
        if customer == loyal:
            # Profiles with computed values, in the replay corpus (tests/workflows/test_replay.py).
            await engine.save_history(handle, "customer-value-branch")

    assert [m["Subject"] for m in engine.mail_to(loyal)] == ["3 orders, 76.5"]
    assert [m["Subject"] for m in engine.mail_to(once)] == ["Hello 1"]
    assert [m["Subject"] for m in engine.mail_to(claims)] == ["Hello new"]
    assert (await engine.outcomes(loyal))["who"] == "then"
    assert (await engine.outcomes(claims))["who"] == "else"
