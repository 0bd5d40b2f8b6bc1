"""Customer value computed in parts (fit on the population, predict a page at a time) equals the whole computation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from measurement import clv

START = datetime(2025, 1, 6, tzinfo=UTC)
WEEK = timedelta(weeks=1)


def simulate(customers: int, end: float, seed: int) -> list[dict]:
    """Customers buying at gamma-distributed rates, each dropping out after a repeat order with some chance."""
    rng = np.random.default_rng(seed)
    orders = []
    for i in range(customers):
        rate, dropout, spend = rng.gamma(0.5, 0.5), rng.beta(1, 3), rng.gamma(4, 10)
        week, repeats = rng.uniform(0, 12), 0
        while week <= end:
            orders.append(
                {"customer": f"c{i}", "time": START + week * WEEK, "value": round(rng.gamma(5, spend / 5), 2)}
            )
            week += rng.exponential(1 / rate)
            repeats += 1
            if repeats > 1 and rng.random() < dropout:
                break
    return orders


def totals(orders: list[dict]) -> list[tuple]:
    """Per-customer totals as SQL hands them over (store.customer_values.OrderTotals)."""
    frame = pd.DataFrame(orders).sort_values(["customer", "time"], kind="stable")
    out = []
    for customer, group in frame.groupby("customer", sort=True):
        out.append(
            (
                customer,
                len(group),
                group["value"].sum(),
                group["time"].min(),
                group["time"].max(),
                group["value"].iloc[0],
            )
        )
    return out


@pytest.mark.parametrize("customers,expected_model", [(600, "bg_nbd_gamma_gamma"), (30, "historical_rate")])
def test_pages_of_a_fitted_model_give_what_the_whole_population_gives(customers: int, expected_model: str) -> None:
    orders = simulate(customers, end=39.0, seed=11)
    as_of = START + 39 * WEEK
    whole = clv.customer_values(orders, as_of=as_of, horizon=timedelta(days=180))
    assert whole.model == expected_model

    rows = totals(orders)
    model = clv.fit(clv.summary_from_totals(rows, as_of), as_of, timedelta(days=180))
    # Totals summed elsewhere (SQL) differ in the last bits, which the optimiser carries a little further.
    assert (model.model, model.customers) == (whole.model, len(rows))
    assert model.parameters == pytest.approx(whole.parameters, rel=1e-3)
    # The model travels through Temporal as JSON between the fit and the batches.
    model = clv.FittedModel.model_validate(model.model_dump(mode="json"))
    parts = []
    for start in range(0, len(rows), 7):
        parts += clv.predict(model, clv.summary_from_totals(rows[start : start + 7], as_of))
    assert [p.customer for p in parts] == [c.customer for c in whole.customers]
    for part, full in zip(parts, whole.customers, strict=True):
        assert part.orders == full.orders
        assert part.revenue == pytest.approx(full.revenue)
        assert part.predicted_value == pytest.approx(full.predicted_value, rel=1e-3)
        assert part.expected_orders == pytest.approx(full.expected_orders, rel=1e-3)
