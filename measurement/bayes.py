"""Probability that each arm has the highest conversion rate, under independent Beta(1, 1) priors.

Each arm's rate has the Beta-Binomial posterior ``Beta(1 + converted, 1 + entered - converted)``. The probability
that arm i is best is ``P_i = integral_0^1 prod_{j != i} F_j(Q_i(u)) du`` where ``Q_i`` is arm i's posterior
quantile function and ``F_j`` arm j's posterior CDF: an integral of a bounded monotone function over the unit
interval, computed by adaptive quadrature (scipy.integrate.quad) and so deterministic. The quadrature's absolute
error is below 1e-8 per arm; the tests agree with the closed form for two arms to 1e-6.
"""

from __future__ import annotations

from collections.abc import Sequence

from scipy import integrate, special


def probability_best(counts: Sequence[tuple[int, int]]) -> list[float]:
    """P(best) for each ``(converted, entered)`` pair, in the same order; the values sum to 1."""
    if not counts:
        return []
    if len(counts) == 1:
        return [1.0]
    posteriors = [(1.0 + converted, 1.0 + entered - converted) for converted, entered in counts]
    raw: list[float] = []
    for i, (a, b) in enumerate(posteriors):
        others = [p for j, p in enumerate(posteriors) if j != i]

        def integrand(u: float, a: float = a, b: float = b, others: list[tuple[float, float]] = others) -> float:
            x = special.betaincinv(a, b, u)  # the quantile of Beta(a, b)
            product = 1.0
            for other_a, other_b in others:
                product *= float(special.betainc(other_a, other_b, x))  # the CDF of Beta(other_a, other_b)
            return product

        value, _ = integrate.quad(integrand, 0.0, 1.0, epsabs=1e-10, epsrel=1e-10, limit=400)
        raw.append(max(0.0, float(value)))
    total = sum(raw)
    return [v / total for v in raw] if total > 0 else [1.0 / len(counts)] * len(counts)
