"""The BG/NBD purchase model and the Gamma-Gamma spend model, fitted by maximum likelihood with scipy.

No maintained Python library fits these today: ``lifetimes`` (last release 2020) still runs but already warns that
pandas 4 removes an option it sets at import, ``btyd`` is a 2022 beta of the same code, and ``pymc-marketing`` pulls
in PyMC for what is a four-parameter likelihood. So the published likelihoods are written out here:

- BG/NBD: P. S. Fader, B. G. S. Hardie, K. L. Lee, "'Counting your customers' the easy way: an alternative to the
  Pareto/NBD model", Marketing Science 24(2), 2005, equations (6) (likelihood), (10) (conditional expectation) and
  P(alive) from the accompanying note "Computing P(alive) using the BG/NBD model" (2008). Per customer: ``x``
  repeat purchases, the last at ``t_x``, observed for ``T`` (time since the first purchase).
- Gamma-Gamma: P. S. Fader, B. G. S. Hardie, "The Gamma-Gamma model of monetary value", 2013 note, equations (1)
  (the marginal density of a customer's mean spend ``m`` over ``x`` transactions) and (5) (its conditional mean).

The parameters are optimised on their logarithms (L-BFGS-B, numerical gradients) from fixed starting points, so a
fit is deterministic. A fit that does not converge returns None and the caller falls back to a simpler estimate.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

Array = npt.NDArray[np.float64]


class BgNbd(NamedTuple):
    r: float
    alpha: float
    a: float
    b: float


class GammaGamma(NamedTuple):
    p: float
    q: float
    gamma: float


def bgnbd_log_likelihood(params: BgNbd, x: Array, t_x: Array, T: Array) -> Array:
    """Each customer's log-likelihood under BG/NBD (FHL 2005, eq. 6)."""
    r, alpha, a, b = params
    common = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    common = common + special.betaln(a, b + x) - special.betaln(a, b)
    survived = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    dropped = np.where(
        repeat,
        np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return common + np.logaddexp(survived, dropped)


def _fit(negative_ll, start: Array) -> Array | None:  # type: ignore[no-untyped-def]
    with np.errstate(all="ignore"):
        result = optimize.minimize(negative_ll, np.log(start), method="L-BFGS-B", bounds=[(-12.0, 12.0)] * len(start))
    if not result.success or not np.all(np.isfinite(result.x)):
        return None
    return np.exp(result.x)


def fit_bgnbd(x: Array, t_x: Array, T: Array) -> BgNbd | None:
    """Maximum-likelihood BG/NBD parameters (time in the unit of ``t_x`` and ``T``), or None."""
    scale = float(np.mean(T)) or 1.0

    def negative_ll(log_params: Array) -> float:
        value = -np.sum(bgnbd_log_likelihood(BgNbd(*np.exp(log_params)), x, t_x, T))
        return float(value) if np.isfinite(value) else 1e300

    fitted = _fit(negative_ll, np.array([1.0, scale, 1.0, 1.0]))
    return None if fitted is None else BgNbd(*(float(v) for v in fitted))


def bgnbd_expected_purchases(params: BgNbd, t: float, x: Array, t_x: Array, T: Array) -> Array:
    """Expected purchases in the next ``t`` time units given each customer's history (FHL 2005, eq. 10)."""
    r, alpha, a, b = params
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
    head = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp)
    return head / (1 + (x > 0) * a / (b + x - 1 + (x == 0)) * ((alpha + T) / (alpha + t_x)) ** (r + x))


def bgnbd_probability_alive(params: BgNbd, x: Array, t_x: Array, T: Array) -> Array:
    """P(still active) given each customer's history (Fader, Hardie, Lee 2008 note, eq. 2)."""
    r, alpha, a, b = params
    return 1 / (1 + (x > 0) * a / (b + x - 1 + (x == 0)) * ((alpha + T) / (alpha + t_x)) ** (r + x))


def gamma_gamma_log_likelihood(params: GammaGamma, x: Array, m: Array) -> Array:
    """Log density of each customer's mean spend ``m`` over ``x`` transactions (Fader-Hardie 2013, eq. 1)."""
    p, q, gamma = params
    px = p * x
    return (
        special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q) + q * np.log(gamma)
        + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(gamma + m * x)
    )  # fmt: skip


def fit_gamma_gamma(x: Array, m: Array) -> GammaGamma | None:
    """Maximum-likelihood Gamma-Gamma parameters from customers with ``x >= 1`` and ``m > 0``; None when the fit
    fails or its mean spend is undefined (``q <= 1``)."""

    def negative_ll(log_params: Array) -> float:
        value = -np.sum(gamma_gamma_log_likelihood(GammaGamma(*np.exp(log_params)), x, m))
        return float(value) if np.isfinite(value) else 1e300

    fitted = _fit(negative_ll, np.array([1.0, 2.0, float(np.mean(m))]))
    if fitted is None or fitted[1] <= 1:
        return None
    return GammaGamma(*(float(v) for v in fitted))


def gamma_gamma_expected_spend(params: GammaGamma, x: Array, m: Array) -> Array:
    """Expected spend per future transaction given ``x`` past ones averaging ``m`` (Fader-Hardie 2013, eq. 5);
    with ``x = 0`` it is the population mean ``p * gamma / (q - 1)``."""
    p, q, gamma = params
    return p * (gamma + m * x) / (p * x + q - 1)
