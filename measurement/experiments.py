"""The read-out of a journey experiment: per-arm rates, comparisons with the control, a holdout's increment, a verdict.

``analyze`` takes each arm's ``entered``/``converted``/``revenue`` and returns a JSON-ready ``ExperimentReport``;
figures that are undefined (a rate with no entrants, a relative lift over a zero rate, a test without variation) are
None, never NaN. The control is the arm named by ``control``, else the holdout arm, else the first arm.

Per arm: the 95% Wilson score interval on its conversion rate (statsmodels ``proportion_confint(method="wilson")``).
Per comparison: the 95% interval on the difference of rates is Newcombe's hybrid score interval (statsmodels
``confint_proportions_2indep(method="newcomb")``, which behaves at rates near 0 and 1 where Wald does not); the
fixed-horizon ``p_value`` is the pooled two-proportion z-test (``proportions_ztest``); ``always_valid_p`` is the
mixture SPRT of ``measurement.sequential``; ``n_per_arm_needed`` is the fixed-horizon sample size per arm for 80%
power at alpha 0.05 at the observed effect (``NormalIndPower`` on Cohen's h), None when the effect is 0.

The verdict reads only the always-valid p-value, so it may be looked at daily without inflating false positives;
with several variants the threshold is alpha / number of comparisons (Bonferroni). "not enough data" while any arm
has fewer than ``MIN_ENTRANTS`` entrants or no arm has converted; a winner (or loser) when an always-valid p-value is
below the threshold; otherwise the comparison closest to a decision says how many more customers per arm the
fixed-horizon power calculation asks for (the mixture SPRT usually needs somewhat more: hence "about").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel
from scipy import stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
)

from measurement import bayes, sequential
from measurement.arms import ArmInput
from measurement.incremental import HoldoutEffect, holdout_effect

ALPHA = 0.05
POWER = 0.8
MIN_ENTRANTS = 30  # per arm, below which the normal approximations behind every test are not trusted


class ArmResult(BaseModel):
    name: str
    entered: int
    converted: int
    conversion_rate: float | None
    revenue: float
    revenue_per_entrant: float | None
    probability_best: float
    ci_low: float | None = None
    ci_high: float | None = None
    """95% Wilson score interval on ``conversion_rate``; None without entrants."""


class Comparison(BaseModel):
    """One arm against the control; lifts are arm minus control (absolute in rate, relative to the control)."""

    arm: str
    control: str
    lift_abs: float | None
    lift_rel: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str = "newcombe"
    p_value: float | None
    always_valid_p: float
    n_per_arm_needed: int | None
    n_per_arm_remaining: int | None


class ChiSquare(BaseModel):
    """Pearson's chi-square test of independence of arm and outcome (no continuity correction)."""

    statistic: float
    dof: int
    p_value: float


class ExperimentReport(BaseModel):
    control: str
    arms: list[ArmResult]
    comparisons: list[Comparison]
    chi_square: ChiSquare | None
    holdout: HoldoutEffect | None
    tau: float
    verdict: str


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _rate(converted: int, entered: int) -> float | None:
    return converted / entered if entered else None


def _rate_interval(converted: int, entered: int) -> tuple[float | None, float | None]:
    """The Wilson score interval on one arm's rate (good near 0 and 1 and for small arms, unlike Wald)."""
    if not entered:
        return None, None
    low, high = proportion_confint(converted, entered, alpha=ALPHA, method="wilson")
    rate = converted / entered  # the interval always holds the rate, within [0, 1]: rounding can step past either
    return _finite(max(0.0, min(float(low), rate))), _finite(min(1.0, max(float(high), rate)))


def _compare(arm: ArmInput, control: ArmInput, tau: float, previous: float) -> Comparison:
    avp = sequential.always_valid_p(arm.converted, arm.entered, control.converted, control.entered, tau, previous)
    empty = Comparison(
        arm=arm.name, control=control.name, lift_abs=None, lift_rel=None, ci_low=None, ci_high=None,
        p_value=None, always_valid_p=avp, n_per_arm_needed=None, n_per_arm_remaining=None,
    )  # fmt: skip
    if not arm.entered or not control.entered:
        return empty
    p_arm, p_control = arm.converted / arm.entered, control.converted / control.entered
    lift = p_arm - p_control
    low, high = confint_proportions_2indep(
        arm.converted, arm.entered, control.converted, control.entered, method="newcomb", compare="diff"
    )
    p_value = None
    if 0 < arm.converted + control.converted < arm.entered + control.entered:
        _, p = proportions_ztest([arm.converted, control.converted], [arm.entered, control.entered])
        p_value = _finite(p)
    needed = remaining = None
    if lift != 0:
        effect = proportion_effectsize(p_arm, p_control)
        n = NormalIndPower().solve_power(effect_size=abs(effect), alpha=ALPHA, power=POWER, ratio=1.0)
        needed = math.ceil(float(n))
        remaining = max(0, needed - min(arm.entered, control.entered))
    return empty.model_copy(
        update={
            "lift_abs": lift,
            "lift_rel": lift / p_control if p_control else None,
            "ci_low": _finite(low),
            "ci_high": _finite(high),
            "p_value": p_value,
            "n_per_arm_needed": needed,
            "n_per_arm_remaining": remaining,
        }
    )


def _chi_square(arms: Sequence[ArmInput]) -> ChiSquare | None:
    table = [[a.converted, a.entered - a.converted] for a in arms if a.entered]
    if len(table) < 2 or not any(row[0] for row in table) or not any(row[1] for row in table):
        return None
    result = stats.chi2_contingency(table, correction=False)
    return ChiSquare(statistic=float(result.statistic), dof=int(result.dof), p_value=float(result.pvalue))


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"={p:.2g}"


def _round_2sf(n: int) -> int:
    return n if n < 100 else round(n, 2 - len(str(n)))


def verdict(arms: Sequence[ArmInput], comparisons: Sequence[Comparison]) -> str:
    """One plain-language line; see the module docstring for the rule."""
    if not comparisons:
        return "not enough data: an experiment needs at least two arms"
    if any(a.entered < MIN_ENTRANTS for a in arms) or not any(a.converted for a in arms):
        return "not enough data"
    threshold = ALPHA / len(comparisons)
    significant = [c for c in comparisons if c.always_valid_p < threshold and c.lift_abs is not None]
    if significant:
        best = min(significant, key=lambda c: (c.always_valid_p, -abs(c.lift_abs or 0.0)))
        lift, low, high = (100 * (v or 0.0) for v in (best.lift_abs, best.ci_low, best.ci_high))
        word = "beats" if lift > 0 else "trails"
        return (
            f"{best.arm} {word} {best.control}: {lift:+.1f} points (95% CI {low:+.1f} to {high:+.1f}), "
            f"p{_fmt_p(best.p_value)}; always-valid p{_fmt_p(best.always_valid_p)}"
        )
    lead = min(comparisons, key=lambda c: (c.always_valid_p, 1.0 if c.p_value is None else c.p_value))
    if lead.n_per_arm_remaining:
        more = _round_2sf(lead.n_per_arm_remaining)
        return f"no significant difference yet: about {more:,} more customers per arm needed"
    if lead.lift_abs:
        return (
            f"no significant difference yet: {lead.arm} {100 * lead.lift_abs:+.1f} points against {lead.control}, "
            f"always-valid p{_fmt_p(lead.always_valid_p)}"
        )
    return "no significant difference yet: the arms convert at the same rate so far"


def analyze(
    arms: Sequence[ArmInput],
    control: str | None = None,
    tau: float = sequential.DEFAULT_TAU,
    previous_always_valid_p: dict[str, float] | None = None,
) -> ExperimentReport:
    """The full read-out. ``previous_always_valid_p`` (arm name -> value from the last report) keeps each
    always-valid p-value a running minimum across looks, as the paper defines it.

    Raises ValueError for no arms, duplicate names, an unknown ``control`` or more than one holdout arm.
    """
    if not arms:
        raise ValueError("arms: at least one arm is required")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError("arms: arm names must be unique")
    holdouts = [a for a in arms if a.holdout]
    if len(holdouts) > 1:
        raise ValueError("arms: at most one arm can be the holdout")
    if control is not None and control not in names:
        raise ValueError(f"control: no arm named {control!r}")
    control_arm = next(a for a in arms if a.name == control) if control else (holdouts or list(arms))[0]
    previous = previous_always_valid_p or {}
    others = [a for a in arms if a.name != control_arm.name]
    comparisons = [_compare(a, control_arm, tau, previous.get(a.name, 1.0)) for a in others]
    p_best = bayes.probability_best([(a.converted, a.entered) for a in arms])
    results = [
        ArmResult(
            name=a.name, entered=a.entered, converted=a.converted, conversion_rate=_rate(a.converted, a.entered),
            revenue=a.revenue, revenue_per_entrant=a.revenue / a.entered if a.entered else None,
            probability_best=p, ci_low=ci[0], ci_high=ci[1],
        )
        for a, p, ci in zip(arms, p_best, (_rate_interval(a.converted, a.entered) for a in arms), strict=True)
    ]  # fmt: skip
    holdout = None
    if control_arm.holdout and others:
        holdout = holdout_effect(control_arm, others, ALPHA)
    return ExperimentReport(
        control=control_arm.name,
        arms=results,
        comparisons=comparisons,
        chi_square=_chi_square(arms),
        holdout=holdout,
        tau=tau,
        verdict=verdict([control_arm, *others], comparisons),
    )
