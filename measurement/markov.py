"""Data-driven attribution weights: the removal effect of each channel in a first-order Markov chain of paths.

Every path (the channels a customer was touched through, in time order) becomes transitions ``start -> c1 -> ... ->
ck -> conversion`` or ``... -> null``; the transition matrix is estimated from the counts. The chain's probability
of reaching ``conversion`` from ``start`` is the absorption probability, found by solving ``(I - Q) x = R`` over the
transient states. The removal effect of channel c is ``1 - P(conversion | c removed) / P(conversion)``, where
removing c sends every visit to c to ``null`` (Anderl, Becker, von Wangenheim, Schumann, "Mapping the customer
journey: lessons learned from graph-based online attribution modeling", IJRM 33(3), 2016).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


def _transitions(channel: IntArray, path: IntArray, channels: int, converted: bool) -> tuple[IntArray, IntArray]:
    """(from, to) state indices of paths given as parallel arrays sorted by path then time.

    States: 0 = start, 1..channels = the channels, channels + 1 = conversion, channels + 2 = null.
    """
    if len(channel) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    state = channel + 1
    first = np.ones(len(path), bool)
    first[1:] = path[1:] != path[:-1]
    last = np.ones(len(path), bool)
    last[:-1] = path[1:] != path[:-1]
    previous = np.where(first, 0, np.roll(state, 1))
    end = channels + 1 if converted else channels + 2
    sources = np.concatenate([previous, state[last]])
    targets = np.concatenate([state, np.full(int(last.sum()), end)])
    return sources, targets


def _conversion_probability(probabilities: npt.NDArray[np.float64], channels: int) -> float:
    transient = channels + 1
    q = probabilities[:transient, :transient]
    r = probabilities[:transient, channels + 1]
    try:
        x = np.linalg.solve(np.eye(transient) - q, r)
    except np.linalg.LinAlgError:
        return 0.0
    return float(x[0])


def removal_effects(
    converting: tuple[IntArray, IntArray], non_converting: tuple[IntArray, IntArray], channels: int
) -> npt.NDArray[np.float64]:
    """The removal effect of each channel code ``0..channels-1`` (zeros when nothing converted).

    Each argument is ``(channel code per touch, path id per touch)``, sorted by path id then time.
    """
    pairs = [
        _transitions(*converting, channels=channels, converted=True),
        _transitions(*non_converting, channels=channels, converted=False),
    ]
    sources = np.concatenate([p[0] for p in pairs])
    targets = np.concatenate([p[1] for p in pairs])
    size = channels + 3
    counts = np.bincount(sources * size + targets, minlength=size * size).reshape(size, size).astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    probabilities = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    base = _conversion_probability(probabilities, channels)
    effects = np.zeros(channels)
    if base <= 0:
        return effects
    for code in range(channels):
        removed = probabilities.copy()
        removed[code + 1, :] = 0.0
        removed[code + 1, channels + 2] = 1.0
        effects[code] = max(0.0, 1.0 - _conversion_probability(removed, channels) / base)
    return effects
