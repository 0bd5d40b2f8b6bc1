"""Multi-touch attribution: the lookback join, each model's shares, the Markov removal effects, the per-step report."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from measurement import attribution

T0 = datetime(2026, 3, 1, 12, 0)


def touch(customer: str, day: float, channel: str, step: str = "s1", cost: float = 1.0, clicked: bool = False) -> dict:
    return {
        "customer": customer, "time": T0 + timedelta(days=day), "journey": "welcome", "step": step,
        "channel": channel, "message_key": f"{customer}:{day}", "clicked": clicked, "cost": cost,
    }  # fmt: skip


def conversion(customer: str, day: float, value: float) -> dict:
    return {"customer": customer, "time": T0 + timedelta(days=day), "value": value}


CONVERSIONS = [conversion("c1", 10, 100.0), conversion("c2", 5, 50.0), conversion("c3", 0, 7.0)]
TOUCHES = [
    touch("c1", 1, "email"),
    touch("c1", 5, "sms", step="s2"),
    touch("c1", 9, "email", step="s3"),
    touch("c2", 4, "push", cost=0.0),
    touch("c2", 6, "email"),  # after c2's conversion: not credited, a non-converting path
    touch("c4", 1, "email"),  # never converted
]


def shares(model: attribution.Model, **kw: object) -> dict[tuple[int, int], float]:
    frame = attribution.credit(CONVERSIONS, TOUCHES, model, **kw)  # type: ignore[arg-type]
    return {(int(r.conversion), int(r.touch)): round(float(r.share), 6) for r in frame.itertuples()}


def test_rule_based_models_on_a_three_touch_path() -> None:
    assert shares("first") == {(0, 0): 1.0, (0, 1): 0.0, (0, 2): 0.0, (1, 3): 1.0}
    assert shares("last") == {(0, 0): 0.0, (0, 1): 0.0, (0, 2): 1.0, (1, 3): 1.0}
    assert shares("linear") == {(0, 0): 0.333333, (0, 1): 0.333333, (0, 2): 0.333333, (1, 3): 1.0}
    assert shares("position") == {(0, 0): 0.4, (0, 1): 0.2, (0, 2): 0.4, (1, 3): 1.0}
    # Ages 9, 5 and 1 days with a 7-day half-life: weights 2^(-9/7), 2^(-5/7), 2^(-1/7), normalised.
    weights = np.exp2(-np.array([9, 5, 1]) / 7)
    expected = dict(zip([(0, 0), (0, 1), (0, 2)], np.round(weights / weights.sum(), 6), strict=True))
    assert shares("time_decay") == {**expected, (1, 3): 1.0}


def test_data_driven_uses_the_removal_effects_of_the_markov_chain() -> None:
    # Paths: email>sms>email>conv, push>conv, email>null (c2 after converting), email>null (c4).
    # start: email 3/4, push 1/4; email: sms 1/4, conv 1/4, null 1/2; sms: email 1; push: conv 1.
    # P(conv) = 3/4 * 1/3 + 1/4 = 1/2. Without email: 1/4 (effect 1/2); without sms: 3/16 + 1/4 (effect 1/8);
    # without push: 1/4 (effect 1/2). Conversion 0: email 1/2 over two touches, sms 1/8 -> 0.4, 0.2, 0.4.
    assert shares("data_driven") == {(0, 0): 0.4, (0, 1): 0.2, (0, 2): 0.4, (1, 3): 1.0}


def test_position_with_one_and_two_touches() -> None:
    two = attribution.credit([conversion("a", 3, 10.0)], [touch("a", 1, "email"), touch("a", 2, "sms")], "position")
    assert two["share"].tolist() == [0.5, 0.5]
    one = attribution.credit([conversion("a", 3, 10.0)], [touch("a", 1, "email")], "position")
    assert one["credit"].tolist() == [10.0]


def test_the_lookback_window_includes_its_edges_and_only_the_customers_touches() -> None:
    touches = [
        touch("a", 0, "email"),  # exactly 30 days before: in
        touch("a", -0.001, "sms"),  # just outside
        touch("a", 30, "push"),  # at the conversion's instant: in
        touch("a", 30.001, "email"),  # after: out
        touch("b", 20, "email"),  # another customer
    ]
    credits = attribution.credit([conversion("a", 30, 9.0)], touches, "linear", lookback=timedelta(days=30))
    assert sorted(credits["touch"].tolist()) == [0, 2]
    assert credits["credit"].tolist() == [4.5, 4.5]


def test_clicked_only_ignores_touches_without_a_click() -> None:
    touches = [touch("a", 1, "email", clicked=True), touch("a", 2, "sms"), touch("a", 3, "push", clicked=True)]
    credits = attribution.credit([conversion("a", 4, 10.0)], touches, "last", clicked_only=True)
    assert dict(zip(credits["touch"], credits["share"], strict=True)) == {0: 0.0, 2: 1.0}


def random_data(seed: int, customers: int = 40, n_conv: int = 120, n_touch: int = 900) -> tuple[pd.DataFrame, ...]:
    rng = np.random.default_rng(seed)
    # Whole hours, so ties between touches and conversion instants and window edges occur.
    hours = lambda n: pd.to_datetime(T0) + pd.to_timedelta(rng.integers(0, 24 * 90, n), unit="h")  # noqa: E731
    touches = pd.DataFrame(
        {
            "customer": rng.integers(0, customers, n_touch).astype(str), "time": hours(n_touch),
            "journey": rng.choice(["j1", "j2"], n_touch), "step": rng.choice(["s1", "s2", "s3"], n_touch),
            "channel": rng.choice(["email", "sms", "push"], n_touch), "message_key": np.arange(n_touch).astype(str),
            "clicked": rng.random(n_touch) < 0.3, "cost": rng.choice([0.0, 0.01, 0.1], n_touch),
        }
    )  # fmt: skip
    conversions = pd.DataFrame(
        {"customer": rng.integers(0, customers, n_conv).astype(str), "time": hours(n_conv),
         "value": rng.gamma(2.0, 20.0, n_conv)}
    )  # fmt: skip
    return conversions, touches


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_sort_merge_join_finds_exactly_the_touches_a_brute_force_scan_finds(seed: int) -> None:
    conversions, touches = random_data(seed)
    lookback = timedelta(days=7)
    customer, time = touches["customer"].to_numpy(), touches["time"].to_numpy()
    expected = {
        (i, int(j))
        for i, c in enumerate(conversions.itertuples())
        for j in np.flatnonzero((customer == c.customer) & (time >= c.time - lookback) & (time <= c.time))
    }
    credits = attribution.credit(conversions, touches, "linear", lookback=lookback)
    assert set(zip(credits["conversion"], credits["touch"], strict=True)) == expected
    counts = credits.groupby("conversion")["touch"].transform("size")
    assert np.allclose(credits["share"], 1.0 / counts)


@pytest.mark.parametrize("model", attribution.MODELS)
def test_the_credits_of_each_conversion_sum_to_its_value(model: attribution.Model) -> None:
    conversions, touches = random_data(7)
    credits = attribution.credit(conversions, touches, model)
    assert (credits["share"] >= 0).all()
    totals = credits.groupby("conversion")["credit"].sum()
    assert np.allclose(totals, conversions["value"].to_numpy()[totals.index], rtol=1e-12)
    report = attribution.report(conversions, touches, model)
    credited_value = conversions["value"].to_numpy()[totals.index].sum()
    assert sum(r.attributed_revenue for r in report.rows) == pytest.approx(credited_value)
    assert sum(r.attributed_conversions for r in report.rows) == pytest.approx(len(totals))
    assert report.unattributed_conversions == len(conversions) - len(totals)
    assert report.unattributed_revenue == pytest.approx(conversions["value"].sum() - credited_value)


def test_the_report_aggregates_per_journey_step_and_channel() -> None:
    result = attribution.report(CONVERSIONS, TOUCHES, "linear")
    rows = {(r.step, r.channel): r for r in result.rows}
    assert set(rows) == {("s1", "email"), ("s2", "sms"), ("s3", "email"), ("s1", "push")}
    email = rows[("s1", "email")]
    assert email.touches == 3 and email.cost == 3.0  # the two uncredited touches cost too
    assert email.attributed_conversions == pytest.approx(1 / 3)
    assert email.attributed_revenue == pytest.approx(100 / 3)
    assert email.return_on_cost == pytest.approx(100 / 9)
    push = rows[("s1", "push")]
    assert push.attributed_revenue == 50.0 and push.cost == 0.0 and push.return_on_cost is None
    assert (result.conversions, result.revenue) == (3, 157.0)
    assert (result.unattributed_conversions, result.unattributed_revenue) == (1, 7.0)


def test_empty_inputs_give_an_empty_report() -> None:
    result = attribution.report([], [], "data_driven")
    assert result.rows == [] and result.conversions == 0
    only_conversions = attribution.report(CONVERSIONS, [], "time_decay")
    assert only_conversions.unattributed_conversions == 3


def test_bad_input_is_rejected_naming_the_problem() -> None:
    with pytest.raises(ValueError, match="model"):
        attribution.credit(CONVERSIONS, TOUCHES, "u_shaped")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"touches: missing column.*cost"):
        attribution.credit(CONVERSIONS, [{k: v for k, v in t.items() if k != "cost"} for t in TOUCHES])
    with pytest.raises(ValueError, match="conversions: time"):
        attribution.credit([{"customer": "a", "time": None, "value": 1.0}], TOUCHES)
    with pytest.raises(ValueError, match="half_life"):
        attribution.credit(CONVERSIONS, TOUCHES, "time_decay", half_life=timedelta(0))
