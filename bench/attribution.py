"""``python -m bench.attribution``: time multi-touch attribution at production volume (not part of the test suite).

Generates ``--conversions`` conversions (default 100,000) and ``--touches`` touches (default 1,000,000) over
``--customers`` customers and 90 days, four channels and twenty steps, then times ``measurement.attribution.report``
once per model (30-day lookback) and prints the seconds each took.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from measurement import attribution

CHANNELS = np.array(["email", "sms", "push", "webhook"])
STEPS = np.array([f"step-{i}" for i in range(20)])
JOURNEYS = np.array(["welcome", "winback", "cart", "vip"])


def generate(conversions: int, touches: int, customers: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    start = np.datetime64("2026-01-01T00:00:00", "ns")
    span = np.timedelta64(90, "D").astype("timedelta64[ns]").astype(np.int64)
    touch_frame = pd.DataFrame(
        {
            "customer": rng.integers(0, customers, touches).astype(str),
            "time": start + rng.integers(0, span, touches).astype("timedelta64[ns]"),
            "journey": JOURNEYS[rng.integers(0, len(JOURNEYS), touches)],
            "step": STEPS[rng.integers(0, len(STEPS), touches)],
            "channel": CHANNELS[rng.integers(0, len(CHANNELS), touches)],
            "message_key": np.arange(touches).astype(str),
            "clicked": rng.random(touches) < 0.1,
            "cost": rng.choice([0.0, 0.001, 0.05], touches),
        }
    )
    conversion_frame = pd.DataFrame(
        {
            "customer": rng.integers(0, customers, conversions).astype(str),
            "time": start + rng.integers(0, span, conversions).astype("timedelta64[ns]"),
            "value": rng.gamma(2.0, 30.0, conversions),
        }
    )
    return conversion_frame, touch_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversions", type=int, default=100_000)
    parser.add_argument("--touches", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=200_000)
    args = parser.parse_args()
    conversions, touches = generate(args.conversions, args.touches, args.customers)
    print(f"{len(conversions):,} conversions, {len(touches):,} touches, {args.customers:,} customers")
    for model in attribution.MODELS:
        began = time.perf_counter()
        result = attribution.report(conversions, touches, model)
        elapsed = time.perf_counter() - began
        credited = sum(r.attributed_conversions for r in result.rows)
        print(f"{model:12s} {elapsed:6.2f} s  ({credited:,.0f} conversions credited, {len(result.rows)} rows)")


if __name__ == "__main__":
    main()
