"""Stable, deterministic bucketing: the same customer lands in the same place every time."""

from __future__ import annotations

import hashlib


def bucket(*parts: str) -> float:
    """A number in [0, 1) derived from the parts (e.g. journey, customer, step): uniform and stable."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
