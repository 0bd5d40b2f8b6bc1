"""Bucketing: the stable hash that puts a customer in a split's arm or a holdout, pinned to fixed values."""

from __future__ import annotations

import pytest

from workflows.bucketing import bucket


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("abandoned-cart", "cust-1", "split"), 0.9697148234692434),
        (("abandoned-cart", "cust-1", "holdout"), 0.45942795923433827),
        (("win-back", "anon:device-42", "subject-test"), 0.8039939367054068),
        (("j", "c1", "split"), 0.43735373506770797),
    ],
)
def test_bucketing_is_pinned(parts: tuple[str, ...], expected: float) -> None:
    """Running customers' variants and holdout membership depend on these exact values: a change to the hash, the
    separator or the scaling would move customers between arms mid-experiment."""
    assert bucket(*parts) == expected


def test_bucketing_is_roughly_uniform() -> None:
    values = [bucket("journey", f"customer-{i}", "split") for i in range(10_000)]
    share = sum(v < 0.3 for v in values) / len(values)
    assert 0.28 < share < 0.32
    assert all(0 <= v < 1 for v in values)
