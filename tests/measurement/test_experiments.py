"""The experiment read-out: rates, intervals, tests, P(best), the holdout's increment and the verdict."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import special, stats
from statsmodels.stats.proportion import proportions_ztest

from measurement import bayes, sequential
from measurement.experiments import ArmInput, analyze


def arm(name: str, entered: int, converted: int, revenue: float = 0.0, **kw: object) -> ArmInput:
    return ArmInput(name=name, entered=entered, converted=converted, revenue=revenue, **kw)  # type: ignore[arg-type]


def test_rates_lifts_and_the_z_test_match_the_textbook_formula() -> None:
    report = analyze([arm("control", 1000, 100, 5000.0), arm("variant-b", 1000, 130, 6500.0)])
    control, variant = report.arms
    assert control.conversion_rate == 0.1 and variant.conversion_rate == 0.13
    assert variant.revenue_per_entrant == 6.5
    (comparison,) = report.comparisons
    assert comparison.arm == "variant-b" and comparison.control == "control"
    assert comparison.lift_abs == pytest.approx(0.03)
    assert comparison.lift_rel == pytest.approx(0.3)
    # Pooled two-proportion z-test, by hand.
    pooled = 230 / 2000
    z = 0.03 / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert comparison.p_value == pytest.approx(2 * stats.norm.sf(z), rel=1e-9)
    assert comparison.ci_low is not None and comparison.ci_high is not None
    assert comparison.ci_low < 0.03 < comparison.ci_high


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10 (hybrid score).
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ],
)
def test_the_interval_is_newcombes_published_hybrid_score_interval(
    counts: tuple[int, int, int, int], expected: tuple[float, float]
) -> None:
    c1, n1, c2, n2 = counts
    report = analyze([arm("control", n2, c2), arm("variant", n1, c1)])
    (comparison,) = report.comparisons
    assert (comparison.ci_low, comparison.ci_high) == pytest.approx(expected, abs=5e-5)
    assert comparison.ci_method == "newcombe"


def test_chi_square_of_a_hand_checked_table() -> None:
    # Expected counts are 20/80 in every row: chi2 = 2 * (100/20 + 100/80) = 12.5 on 2 dof, p = exp(-6.25).
    report = analyze([arm("a", 100, 10), arm("b", 100, 20), arm("c", 100, 30)])
    assert report.chi_square is not None
    assert report.chi_square.statistic == pytest.approx(12.5)
    assert report.chi_square.dof == 2
    assert report.chi_square.p_value == pytest.approx(math.exp(-6.25))


def test_chi_square_of_two_arms_is_the_square_of_the_z_statistic() -> None:
    report = analyze([arm("a", 400, 40), arm("b", 500, 70)])
    z, _ = proportions_ztest([70, 40], [500, 400])
    assert report.chi_square is not None
    assert report.chi_square.statistic == pytest.approx(z * z)


def evan_miller_p_b_beats_a(conv_a: int, n_a: int, conv_b: int, n_b: int) -> float:
    """P(B > A) for Beta(1+conv, 1+n-conv) posteriors, Evan Miller's closed form."""
    a_a, b_a, a_b, b_b = 1 + conv_a, 1 + n_a - conv_a, 1 + conv_b, 1 + n_b - conv_b
    return sum(
        math.exp(
            special.betaln(a_a + i, b_a + b_b)
            - math.log(b_b + i)
            - special.betaln(1 + i, b_b)
            - special.betaln(a_a, b_a)
        )
        for i in range(a_b)
    )


@pytest.mark.parametrize("counts", [(10, 100, 15, 100), (40, 1000, 52, 1000), (3, 20, 3, 25), (0, 50, 1, 60)])
def test_probability_best_of_two_arms_matches_the_closed_form(counts: tuple[int, int, int, int]) -> None:
    conv_a, n_a, conv_b, n_b = counts
    p_a, p_b = bayes.probability_best([(conv_a, n_a), (conv_b, n_b)])
    assert p_b == pytest.approx(evan_miller_p_b_beats_a(*counts), abs=1e-6)
    assert p_a + p_b == pytest.approx(1.0)


def test_probability_best_is_shared_by_identical_arms_and_favours_the_better_one() -> None:
    assert bayes.probability_best([(5, 50)] * 4) == pytest.approx([0.25] * 4, abs=1e-9)
    report = analyze([arm("a", 2000, 200), arm("b", 2000, 260), arm("c", 2000, 210)])
    best = max(report.arms, key=lambda a: a.probability_best)
    assert best.name == "b" and best.probability_best > 0.99
    assert sum(a.probability_best for a in report.arms) == pytest.approx(1.0)


def test_the_mixture_likelihood_ratio_is_the_ratio_of_marginal_likelihoods() -> None:
    tau = 0.03
    for diff, variance in [(0.01, 1e-4), (-0.02, 4e-5), (0.0, 1e-3), (0.05, 2e-4)]:
        mixture = stats.norm.pdf(diff, 0, math.sqrt(variance + tau * tau)) / stats.norm.pdf(
            diff, 0, math.sqrt(variance)
        )
        assert sequential.mixture_likelihood_ratio(diff, variance, tau) == pytest.approx(mixture, rel=1e-9)


def test_always_valid_p_is_one_without_data() -> None:
    assert sequential.always_valid_p(0, 0, 0, 0) == 1.0
    assert sequential.always_valid_p(0, 100, 0, 100) == 1.0


def test_always_valid_p_never_rises_as_evidence_for_a_fixed_effect_accumulates() -> None:
    previous = 1.0
    values = []
    for n in range(250, 20001, 250):
        previous = sequential.always_valid_p(int(0.12 * n), n, int(0.10 * n), n, previous=previous)
        values.append(previous)
    assert values[0] > 0.5
    assert all(later <= earlier for earlier, later in itertools.pairwise(values))
    assert values[-1] < 0.001


@pytest.mark.parametrize(
    "counts", [(12, 100, 10, 100), (130, 1000, 100, 1000), (60, 400, 30, 420), (1100, 10000, 1000, 10000)]
)
def test_always_valid_p_is_never_below_the_fixed_horizon_p(counts: tuple[int, int, int, int]) -> None:
    c1, n1, c2, n2 = counts
    _, fixed = proportions_ztest([c1, c2], [n1, n2])
    for tau in (0.005, 0.02, 0.1):
        assert sequential.always_valid_p(c1, n1, c2, n2, tau=tau) >= fixed


def test_peeking_daily_at_the_always_valid_p_keeps_false_positives_near_alpha() -> None:
    rng = np.random.default_rng(12)
    experiments, looks, per_look, rate = 400, 40, 100, 0.1
    a = rng.binomial(per_look, rate, size=(experiments, looks)).cumsum(axis=1)
    b = rng.binomial(per_look, rate, size=(experiments, looks)).cumsum(axis=1)
    n = per_look * np.arange(1, looks + 1)
    pooled = (a + b) / (2 * n)
    z = (a - b) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    naive = int((2 * stats.norm.sf(np.abs(z)) < 0.05).any(axis=1).sum())
    valid = 0
    for row_a, row_b in zip(a, b, strict=True):
        previous = 1.0
        for look in range(looks):
            previous = sequential.always_valid_p(
                int(row_a[look]), int(n[look]), int(row_b[look]), int(n[look]), previous=previous
            )
        valid += previous < 0.05
    assert naive / experiments > 0.12  # reading a fixed-horizon p-value daily inflates false positives...
    assert valid / experiments <= 0.05  # ...the always-valid one does not


def test_the_sample_size_is_the_power_formula_on_cohens_h() -> None:
    report = analyze([arm("control", 1000, 100), arm("variant", 1000, 115)])
    (comparison,) = report.comparisons
    h = 2 * math.asin(math.sqrt(0.115)) - 2 * math.asin(math.sqrt(0.10))
    # Each arm's arcsine-transformed rate has variance 1/n, so the difference has 2/n.
    n = 2 * ((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / h) ** 2
    assert comparison.n_per_arm_needed is not None and abs(comparison.n_per_arm_needed - n) <= 1
    assert comparison.n_per_arm_remaining == comparison.n_per_arm_needed - 1000
    same = analyze([arm("control", 1000, 100), arm("variant", 1000, 100)])
    assert same.comparisons[0].n_per_arm_needed is None


def test_the_control_is_the_named_arm_else_the_holdout_else_the_first() -> None:
    arms = [arm("variant-a", 100, 10), arm("holdout", 100, 8, holdout=True), arm("variant-b", 100, 12)]
    assert analyze(arms).control == "holdout"
    assert analyze(arms, control="variant-b").control == "variant-b"
    assert analyze([arms[0], arms[2]]).control == "variant-a"
    assert [c.arm for c in analyze(arms).comparisons] == ["variant-a", "variant-b"]


def test_undefined_figures_are_none_and_the_report_is_strict_json() -> None:
    report = analyze([arm("control", 0, 0), arm("variant", 0, 0)])
    assert report.arms[0].conversion_rate is None and report.arms[0].revenue_per_entrant is None
    comparison = report.comparisons[0]
    assert comparison.lift_abs is None and comparison.p_value is None and comparison.ci_low is None
    assert comparison.always_valid_p == 1.0
    assert report.chi_square is None
    assert report.verdict == "not enough data"
    zero_control = analyze([arm("control", 100, 0), arm("variant", 100, 5)])
    assert zero_control.comparisons[0].lift_rel is None
    for r in (report, zero_control, analyze([arm("a", 50, 50), arm("b", 50, 50)])):
        json.loads(r.model_dump_json(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_bad_input_is_rejected_naming_the_problem() -> None:
    with pytest.raises(ValidationError, match="converted"):
        arm("a", 10, 11)
    with pytest.raises(ValidationError, match="entered"):
        arm("a", -1, 0)
    with pytest.raises(ValueError, match="unique"):
        analyze([arm("a", 10, 1), arm("a", 10, 2)])
    with pytest.raises(ValueError, match="control"):
        analyze([arm("a", 10, 1), arm("b", 10, 2)], control="c")
    with pytest.raises(ValueError, match="holdout"):
        analyze([arm("a", 10, 1, holdout=True), arm("b", 10, 2, holdout=True)])
    with pytest.raises(ValueError, match="arms"):
        analyze([])


def test_verdicts() -> None:
    assert analyze([arm("control", 20, 2), arm("variant-b", 20, 9)]).verdict == "not enough data"
    winner = analyze([arm("control", 10000, 1000), arm("variant-b", 10000, 1200)])
    assert winner.verdict.startswith("variant-b beats control: +2.0 points (95% CI +1.")
    assert "p<0.001; always-valid p<0.001" in winner.verdict
    loser = analyze([arm("control", 10000, 1200), arm("variant-b", 10000, 1000)])
    assert loser.verdict.startswith("variant-b trails control: -2.0 points")
    waiting = analyze([arm("control", 1000, 100), arm("variant-b", 1000, 110)])
    remaining = waiting.comparisons[0].n_per_arm_remaining
    assert remaining is not None and remaining > 10000
    assert (
        waiting.verdict
        == f"no significant difference yet: about {round(remaining, -3):,} more customers per arm needed"
    )
    tied = analyze([arm("control", 1000, 100), arm("variant-b", 1000, 100)])
    assert tied.verdict == "no significant difference yet: the arms convert at the same rate so far"


def test_the_verdict_uses_the_always_valid_p_not_the_fixed_horizon_one() -> None:
    report = analyze([arm("control", 3000, 300), arm("variant-b", 3000, 360)])
    (comparison,) = report.comparisons
    assert comparison.p_value is not None and comparison.p_value < 0.05 <= comparison.always_valid_p
    assert report.verdict.startswith("no significant difference yet")


def test_previous_always_valid_p_values_keep_a_running_minimum() -> None:
    arms = [arm("control", 1000, 100), arm("variant-b", 1000, 104)]
    fresh = analyze(arms).comparisons[0].always_valid_p
    assert fresh > 0.5
    assert analyze(arms, previous_always_valid_p={"variant-b": 0.2}).comparisons[0].always_valid_p == 0.2


def test_holdout_increment_of_conversions_and_revenue() -> None:
    rng = np.random.default_rng(5)
    holdout_revenue = np.where(rng.random(4000) < 0.05, rng.gamma(2.0, 30.0, 4000), 0.0)
    treated_revenue = np.where(rng.random(16000) < 0.07, rng.gamma(2.0, 30.0, 16000), 0.0)
    halves = np.array_split(treated_revenue, 2)
    arms = [
        ArmInput(
            name="holdout", entered=4000, converted=int((holdout_revenue > 0).sum()), revenue=holdout_revenue.sum(),
            revenue_sq=float((holdout_revenue**2).sum()), holdout=True,
        ),
        *[
            ArmInput(
                name=f"variant-{i}", entered=len(h), converted=int((h > 0).sum()), revenue=h.sum(),
                revenue_sq=float((h**2).sum()),
            )
            for i, h in enumerate(halves)
        ],
    ]  # fmt: skip
    effect = analyze(arms).holdout
    assert effect is not None and effect.treated_entered == 16000
    c_h, c_t = int((holdout_revenue > 0).sum()), int((treated_revenue > 0).sum())
    assert effect.incremental_conversions == pytest.approx(c_t - 16000 * c_h / 4000)
    assert effect.incremental_conversions_ci_low is not None and effect.incremental_conversions_ci_high is not None
    assert (
        effect.incremental_conversions_ci_low < effect.incremental_conversions < effect.incremental_conversions_ci_high
    )
    expected = treated_revenue.sum() - 16000 * holdout_revenue.mean()
    assert effect.incremental_revenue == pytest.approx(expected)
    se = math.sqrt(16000 * treated_revenue.var(ddof=1) + 16000**2 * holdout_revenue.var(ddof=1) / 4000)
    assert effect.incremental_revenue_ci_low == pytest.approx(expected - 1.959964 * se, rel=1e-6)
    assert effect.incremental_revenue_ci_high == pytest.approx(expected + 1.959964 * se, rel=1e-6)
    # Without the sum of squares the interval assumes every order was worth the mean: narrower.
    plain = analyze([a.model_copy(update={"revenue_sq": None}) for a in arms]).holdout
    assert plain is not None and plain.incremental_revenue == pytest.approx(expected)
    assert plain.incremental_revenue_ci_low is not None and plain.incremental_revenue_ci_low > expected - 1.96 * se


def test_no_holdout_section_without_a_holdout_arm() -> None:
    assert analyze([arm("a", 100, 10), arm("b", 100, 12)]).holdout is None


@pytest.mark.parametrize(("entered", "converted"), [(1000, 100), (12, 0), (7, 7), (40, 3)])
def test_each_arm_rate_has_the_wilson_score_interval(entered: int, converted: int) -> None:
    report = analyze([arm("control", entered, converted), arm("empty", 0, 0)])
    control, empty = report.arms
    z = stats.norm.ppf(0.975)
    p = converted / entered
    centre = (p + z * z / (2 * entered)) / (1 + z * z / entered)
    half = z * math.sqrt(p * (1 - p) / entered + z * z / (4 * entered * entered)) / (1 + z * z / entered)
    assert control.ci_low == pytest.approx(centre - half, abs=1e-12)
    assert control.ci_high == pytest.approx(centre + half, abs=1e-12)
    assert control.ci_low is not None and control.ci_high is not None
    assert 0.0 <= control.ci_low <= p <= control.ci_high <= 1.0
    assert (empty.ci_low, empty.ci_high) == (None, None)
