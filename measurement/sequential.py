"""Always-valid p-values for the difference of two conversion rates: the mixture SPRT (mSPRT).

Reference: R. Johari, L. Pekelis, D. Walsh (with P. Koomen), "Always valid inference: continuous monitoring of
A/B tests", Operations Research 70(3), 2022 (first circulated 2015; the KDD 2017 paper "Peeking at A/B tests"
is its short form). With the normal approximation, the estimated difference ``d`` of two rates has variance
``V``; mixing the alternative ``theta ~ N(0, tau^2)`` over the effect gives the likelihood ratio against
``theta = 0``

    Lambda = N(d; 0, V + tau^2) / N(d; 0, V) = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))

and the always-valid p-value after each look is ``p_n = min(p_{n-1}, 1 / Lambda_n)`` with ``p_0 = 1``. By Ville's
inequality ``P(exists n: p_n <= alpha) <= alpha`` under the null, so the p-value may be read every day and acted
on whenever it drops below alpha, without the inflation of repeatedly reading a fixed-horizon p-value.

``V`` is the pooled-variance estimate the two-proportion z-test uses, so the always-valid p-value is never
below the fixed-horizon one (the mixture's likelihood ratio never exceeds what the z statistic allows).
"""

from __future__ import annotations

import math

# The mixing standard deviation over the difference of rates: 2 percentage points, the size of lift a change to a
# journey typically shows. The test is most powerful for effects near tau; a larger tau favours large effects.
DEFAULT_TAU = 0.02


def pooled_variance(converted_a: int, entered_a: int, converted_b: int, entered_b: int) -> float | None:
    """Variance of the difference of the two rates under the null (pooled rate), or None without data."""
    if entered_a <= 0 or entered_b <= 0:
        return None
    pooled = (converted_a + converted_b) / (entered_a + entered_b)
    return pooled * (1 - pooled) * (1 / entered_a + 1 / entered_b)


def mixture_likelihood_ratio(diff: float, variance: float, tau: float = DEFAULT_TAU) -> float:
    """Lambda of the normal-mixture SPRT for an observed difference with the given variance (see module doc)."""
    if variance <= 0:
        return 1.0
    tau2 = tau * tau
    log_ratio = 0.5 * math.log(variance / (variance + tau2)) + tau2 * diff * diff / (2 * variance * (variance + tau2))
    return math.exp(min(log_ratio, 700.0))


def always_valid_p(
    converted_a: int,
    entered_a: int,
    converted_b: int,
    entered_b: int,
    tau: float = DEFAULT_TAU,
    previous: float = 1.0,
) -> float:
    """The always-valid p-value of "rate a equals rate b" at this look.

    ``previous`` is the value reported at the previous look (1 at the first); the result never exceeds it, which is
    the paper's running minimum. Without history the current-look value ``min(1, 1/Lambda)`` is still valid at any
    stopping time. No data, or no variation (every entrant converted, or none), gives ``previous``.
    """
    variance = pooled_variance(converted_a, entered_a, converted_b, entered_b)
    if variance is None or variance <= 0:
        return min(1.0, previous)
    diff = converted_a / entered_a - converted_b / entered_b
    return min(1.0, previous, 1.0 / mixture_likelihood_ratio(diff, variance, tau))
