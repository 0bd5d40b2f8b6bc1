"""What a journey added over its holdout: incremental conversions and revenue, each with an interval.

The treated group is every non-holdout arm pooled. Incremental conversions are the treated conversions minus what
the treated entrants would have converted at the holdout's rate, ``n_t * (p_t - p_h)``; its interval is ``n_t``
times Newcombe's interval on ``p_t - p_h`` (statsmodels). Incremental revenue is ``R_t - n_t * R_h / n_h``; its
interval is normal with variance ``n_t s_t^2 + n_t^2 s_h^2 / n_h`` where ``s^2`` is the per-entrant variance of
revenue (see ``ArmInput.revenue_sq`` for how it is estimated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep

from measurement.arms import ArmInput


class HoldoutEffect(BaseModel):
    treated_entered: int
    treated_converted: int
    incremental_conversions: float | None
    incremental_conversions_ci_low: float | None
    incremental_conversions_ci_high: float | None
    incremental_revenue: float | None
    incremental_revenue_ci_low: float | None
    incremental_revenue_ci_high: float | None


def _revenue_variance(entered: int, converted: int, revenue: float, revenue_sq: float | None) -> float:
    """Per-entrant variance of revenue (sample variance when ``revenue_sq`` is known)."""
    if entered < 2:
        return 0.0
    if revenue_sq is not None:
        return max(0.0, (revenue_sq - revenue * revenue / entered) / (entered - 1))
    if not converted:
        return 0.0
    value = revenue / converted
    rate = converted / entered
    return value * value * rate * (1 - rate)


def holdout_effect(holdout: ArmInput, treated_arms: Sequence[ArmInput], alpha: float = 0.05) -> HoldoutEffect:
    """The treated arms' increment over the holdout; figures are None when either side has no entrants."""
    n_t = sum(a.entered for a in treated_arms)
    c_t = sum(a.converted for a in treated_arms)
    r_t = sum(a.revenue for a in treated_arms)
    sq = [a.revenue_sq for a in treated_arms]
    r_sq_t = None if any(s is None for s in sq) else sum(s or 0.0 for s in sq)
    result = HoldoutEffect(
        treated_entered=n_t, treated_converted=c_t,
        incremental_conversions=None, incremental_conversions_ci_low=None, incremental_conversions_ci_high=None,
        incremental_revenue=None, incremental_revenue_ci_low=None, incremental_revenue_ci_high=None,
    )  # fmt: skip
    n_h = holdout.entered
    if not n_t or not n_h:
        return result
    low, high = confint_proportions_2indep(c_t, n_t, holdout.converted, n_h, method="newcomb", compare="diff")
    increment = r_t - n_t * holdout.revenue / n_h
    variance = (
        n_t * _revenue_variance(n_t, c_t, r_t, r_sq_t)
        + n_t * n_t * _revenue_variance(n_h, holdout.converted, holdout.revenue, holdout.revenue_sq) / n_h
    )
    half = float(stats.norm.ppf(1 - alpha / 2)) * math.sqrt(variance)
    return result.model_copy(
        update={
            "incremental_conversions": c_t - n_t * holdout.converted / n_h,
            "incremental_conversions_ci_low": n_t * float(low),
            "incremental_conversions_ci_high": n_t * float(high),
            "incremental_revenue": increment,
            "incremental_revenue_ci_low": increment - half,
            "incremental_revenue_ci_high": increment + half,
        }
    )
