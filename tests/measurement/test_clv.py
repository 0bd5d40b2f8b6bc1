"""Customer lifetime value: the per-customer history, the BG/NBD + Gamma-Gamma prediction and its fallback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from measurement import btyd
from measurement.clv import customer_values

START = datetime(2025, 1, 6, tzinfo=UTC)
WEEK = timedelta(weeks=1)
# Fader, Hardie and Lee's (2005) estimates on the CDNOW cohort; Fader and Hardie's (2013) Gamma-Gamma estimates.
CDNOW = btyd.BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
SPEND = btyd.GammaGamma(p=6.25, q=3.74, gamma=15.44)


def test_the_published_conditional_expectation() -> None:
    # FHL (2005), section 5: 2 repeat purchases, the last at week 30.43, observed for 38.86 weeks: 1.226 expected
    # purchases in the next 39 weeks.
    one = np.array([1.0])
    expected = btyd.bgnbd_expected_purchases(CDNOW, 39.0, 2 * one, 30.43 * one, 38.86 * one)
    assert expected[0] == pytest.approx(1.226, abs=5e-4)


def simulate(customers: int, end: float, seed: int) -> list[dict]:
    """Orders drawn from BG/NBD with the CDNOW parameters and Gamma-Gamma spend; first orders in weeks 0-12."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(CDNOW.r, 1 / CDNOW.alpha, customers)
    dropout = rng.beta(CDNOW.a, CDNOW.b, customers)
    spend_rate = rng.gamma(SPEND.q, 1 / SPEND.gamma, customers)
    orders = []
    for i in range(customers):
        week = rng.uniform(0, 12)
        while week <= end:
            value = rng.gamma(SPEND.p, 1 / spend_rate[i])
            orders.append({"customer": f"c{i}", "time": START + week * WEEK, "value": round(value, 2)})
            week += rng.exponential(1 / rates[i])
            if len(orders) > 1 and orders[-2]["customer"] == f"c{i}" and rng.random() < dropout[i]:
                break  # BG/NBD: a customer may drop out after each repeat purchase
    return orders


def test_predictions_match_what_simulated_customers_then_do() -> None:
    orders = simulate(4000, end=78.0, seed=3)
    cutoff = START + 39 * WEEK
    calibration = [o for o in orders if o["time"] <= cutoff]
    later = [o for o in orders if o["time"] > cutoff]
    report = customer_values(calibration, as_of=cutoff, horizon=39 * WEEK)
    assert report.model == "bg_nbd_gamma_gamma"
    predicted_orders = sum(c.expected_orders for c in report.customers)
    predicted_revenue = sum(c.predicted_value for c in report.customers)
    assert predicted_orders == pytest.approx(len(later), rel=0.1)
    assert predicted_revenue == pytest.approx(sum(o["value"] for o in later), rel=0.15)
    assert report.parameters["r"] / report.parameters["alpha"] == pytest.approx(CDNOW.r / CDNOW.alpha, rel=0.2)


def test_frequent_recent_buyers_are_predicted_more() -> None:
    orders = simulate(1500, end=39.0, seed=4)
    now = START + 39 * WEEK

    def history(name: str, weeks_ago: list[float]) -> list[dict]:
        return [{"customer": name, "time": now - w * WEEK, "value": 30.0} for w in weeks_ago]

    orders += history("frequent-recent", [30, 25, 20, 15, 10, 5, 1 / 7])
    orders += history("frequent-lapsed", [37, 36, 35, 34, 33, 32, 31])
    orders += history("rare-recent", [30, 1 / 7])
    orders += history("once-long-ago", [38])
    orders += history("once-yesterday", [1 / 7])
    report = customer_values(orders, as_of=now)
    assert report.model == "bg_nbd_gamma_gamma"
    value = {c.customer: c.predicted_value for c in report.customers}
    alive = {c.customer: c.probability_alive for c in report.customers}
    assert value["frequent-recent"] > value["rare-recent"] > value["once-long-ago"]
    assert value["frequent-recent"] > value["frequent-lapsed"]
    assert value["once-yesterday"] > value["once-long-ago"]
    assert alive["frequent-recent"] is not None and alive["frequent-lapsed"] is not None
    assert alive["frequent-recent"] > 0.9 > alive["frequent-lapsed"]


def test_thin_data_falls_back_to_the_historical_rate() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    orders = [
        {"customer": "old", "time": now - timedelta(days=730), "value": 40.0},
        {"customer": "new", "time": now - timedelta(days=1), "value": 40.0},
        {"customer": "loyal", "time": now - timedelta(days=200), "value": 20.0},
        {"customer": "loyal", "time": now - timedelta(days=100), "value": 30.0},
        {"customer": "loyal", "time": now - timedelta(days=10), "value": 40.0},
    ]
    report = customer_values(orders, as_of=now, horizon=timedelta(days=365))
    assert report.model == "historical_rate" and report.parameters == {} and report.repeat_customers == 1
    by_name = {c.customer: c for c in report.customers}
    assert by_name["old"].expected_orders == pytest.approx(0.5)  # one order in two years
    assert by_name["old"].predicted_value == pytest.approx(20.0)
    assert by_name["new"].predicted_value == pytest.approx(40.0)  # one order, counted over at least the horizon
    assert by_name["loyal"].expected_orders == pytest.approx(3.0)
    assert by_name["loyal"].predicted_value == pytest.approx(90.0)
    assert by_name["new"].probability_alive is None


def test_the_history_of_each_customer() -> None:
    orders = [
        {"customer": "a", "time": "2026-01-05T10:00:00Z", "value": 10.0},
        {"customer": "a", "time": "2026-02-05T10:00:00Z", "value": 30.0},
        {"customer": "b", "time": "2026-01-20T08:00:00Z", "value": 5.5},
    ]
    report = customer_values(orders)
    a, b = report.customers
    assert (a.customer, a.orders, a.revenue, a.average_order_value) == ("a", 2, 40.0, 20.0)
    assert a.first_order == datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert a.last_order == datetime(2026, 2, 5, 10, tzinfo=UTC)
    assert (b.orders, b.revenue, b.first_order, b.last_order) == (1, 5.5, b.first_order, b.first_order)
    assert report.as_of == datetime(2026, 2, 5, 10, tzinfo=UTC)  # the last order by default
    assert customer_values([]).customers == []


def test_bad_input_is_rejected_naming_the_problem() -> None:
    order = {"customer": "a", "time": "2026-01-05T10:00:00Z", "value": 10.0}
    with pytest.raises(ValueError, match="value"):
        customer_values([{**order, "value": -1.0}])
    with pytest.raises(ValueError, match=r"missing column.*value"):
        customer_values([{"customer": "a", "time": "2026-01-05"}])
    with pytest.raises(ValueError, match="as_of"):
        customer_values([order], as_of=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="horizon"):
        customer_values([order], horizon=timedelta(0))
