"""Multi-touch attribution: which journeys, steps and channels earned each conversion.

Input: ``conversions`` (columns ``customer, time, value``) and ``touches`` (``customer, time, journey, step, channel,
message_key, clicked, cost``), as DataFrames or anything ``pandas.DataFrame`` accepts (a list of dicts). A conversion
is credited to its customer's touches with ``time - lookback <= touch time <= time`` (only clicked ones with
``clicked_only``); the credits of one conversion sum to its value, and a conversion without such a touch is counted
as unattributed. Models, by the share each touch in a path of ``L`` touches gets:

- ``first`` / ``last``: all to the earliest / the latest touch;
- ``linear``: ``1/L`` each;
- ``time_decay``: proportional to ``2 ** (-age / half_life)`` (age = conversion time - touch time);
- ``position``: 40% first, 40% last, 20% shared by the middle (one touch: all; two: half each);
- ``data_driven``: proportional to the Markov-chain removal effect of the touch's channel (``measurement.markov``),
  a channel's share split equally among its touches in the path. The chain is estimated over the converting paths
  and the non-converting ones (each customer's touches that fall in no conversion's window). A conversion whose
  channels all have zero effect (and every conversion when nothing can be estimated) falls back to linear.

The join is a sort-merge over (customer, time): O((n + m) log(n + m)) for n conversions and m touches.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel

from measurement import markov

Model = Literal["first", "last", "linear", "time_decay", "position", "data_driven"]
MODELS: tuple[Model, ...] = ("first", "last", "linear", "time_decay", "position", "data_driven")
CONVERSION_COLUMNS = ("customer", "time", "value")
TOUCH_COLUMNS = ("customer", "time", "journey", "step", "channel", "message_key", "clicked", "cost")


class AttributionRow(BaseModel):
    journey: str
    step: str
    channel: str
    touches: int
    attributed_conversions: float
    attributed_revenue: float
    cost: float
    return_on_cost: float | None  # attributed revenue / cost; None when the cost is 0


class AttributionReport(BaseModel):
    model: Model
    conversions: int
    revenue: float
    unattributed_conversions: int
    unattributed_revenue: float
    rows: list[AttributionRow]


def _frame(data: Any, columns: tuple[str, ...], name: str) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        frame = data
    else:
        rows = list(data)
        frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(columns))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")
    return frame.reset_index(drop=True)


def _nanoseconds(column: pd.Series, name: str) -> npt.NDArray[np.int64]:
    times = pd.to_datetime(column, utc=True)
    if times.isna().any():
        raise ValueError(f"{name}: time must be set on every row")
    return times.dt.tz_convert(None).dt.as_unit("ns").to_numpy().view("int64")


def _window_pairs(conversions: pd.DataFrame, touches: pd.DataFrame, lookback: timedelta) -> dict[str, Any]:
    """Every (conversion, touch) pair within the lookback window, grouped by conversion, touches in time order."""
    codes, _ = pd.factorize(pd.concat([conversions["customer"], touches["customer"]], ignore_index=True))
    conv_code, touch_code = codes[: len(conversions)], codes[len(conversions) :]
    conv_time = _nanoseconds(conversions["time"], "conversions")
    touch_time = _nanoseconds(touches["time"], "touches")
    window = int(lookback / timedelta(microseconds=1)) * 1000
    n = len(conversions)
    # Merge touches (kind 1) with each conversion's window start (kind 0, before equal times) and end (kind 2, after).
    code = np.concatenate([touch_code, conv_code, conv_code])
    time = np.concatenate([touch_time, conv_time - window, conv_time])
    kind = np.concatenate([np.ones(len(touches), np.int8), np.zeros(n, np.int8), np.full(n, 2, np.int8)])
    merged = np.lexsort((kind, time, code))
    is_touch = kind[merged] == 1
    before = np.cumsum(is_touch) - is_touch  # touches sorted before each merged position
    position = np.empty(len(merged), np.int64)
    position[merged] = before
    start, end = position[len(touches) : len(touches) + n], position[len(touches) + n :]
    touch_order = merged[is_touch]  # touches sorted by (customer, time)
    lengths = end - start
    offsets = np.cumsum(lengths) - lengths
    conversion = np.repeat(np.arange(n), lengths)
    rank = np.arange(int(lengths.sum())) - np.repeat(offsets, lengths)
    touch = touch_order[np.repeat(start, lengths) + rank]
    age = (conv_time[conversion] - touch_time[touch]).astype(float)
    return {
        "conversion": conversion, "touch": touch, "rank": rank, "length": np.repeat(lengths, lengths),
        "offsets": offsets, "lengths": lengths, "age": age, "touch_order": touch_order, "touch_code": touch_code,
    }  # fmt: skip


def _normalise(weights: npt.NDArray[np.float64], conversion: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.float64]:
    totals = np.bincount(conversion, weights, minlength=n)
    return weights / totals[conversion]


def _data_driven(pairs: dict[str, Any], channel_codes: npt.NDArray[np.int64], channels: int) -> npt.NDArray[np.float64]:
    conversion, touch = pairs["conversion"], pairs["touch"]
    linear = 1.0 / pairs["length"]
    if len(touch) == 0:
        return linear
    in_window = np.zeros(len(channel_codes), bool)
    in_window[touch] = True
    rest = pairs["touch_order"][~in_window[pairs["touch_order"]]]
    effects = markov.removal_effects(
        (channel_codes[touch], conversion), (channel_codes[rest], pairs["touch_code"][rest]), channels
    )
    pair_channel = channel_codes[touch]
    key = conversion * channels + pair_channel
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    weights = effects[pair_channel] / counts[inverse]
    totals = np.bincount(conversion, weights, minlength=int(conversion.max()) + 1)[conversion]
    return np.where(totals > 0, weights / np.where(totals > 0, totals, 1.0), linear)


def credit(
    conversions: Any,
    touches: Any,
    model: Model = "last",
    lookback: timedelta = timedelta(days=30),
    half_life: timedelta = timedelta(days=7),
    clicked_only: bool = False,
) -> pd.DataFrame:
    """One row per credited (conversion, touch): ``conversion`` and ``touch`` (row positions in the inputs),
    ``share`` (of the conversion, summing to 1 per conversion) and ``credit`` (share x value)."""
    if model not in MODELS:
        raise ValueError(f"model: must be one of {', '.join(MODELS)}")
    if lookback < timedelta(0) or half_life <= timedelta(0):
        raise ValueError("lookback must be >= 0 and half_life > 0")
    conv = _frame(conversions, CONVERSION_COLUMNS, "conversions")
    tch = _frame(touches, TOUCH_COLUMNS, "touches")
    eligible = tch[tch["clicked"].astype(bool)] if clicked_only else tch
    pairs = _window_pairs(conv, eligible, lookback)
    conversion, rank, length = pairs["conversion"], pairs["rank"], pairs["length"]
    if model == "first":
        share = (rank == 0).astype(float)
    elif model == "last":
        share = (rank == length - 1).astype(float)
    elif model == "linear":
        share = 1.0 / length
    elif model == "position":
        middle = 0.2 / np.maximum(length - 2, 1)
        share = np.where(length <= 2, 1.0 / length, np.where((rank == 0) | (rank == length - 1), 0.4, middle))
    elif model == "time_decay":
        lengths = pairs["lengths"][pairs["lengths"] > 0]
        last = (pairs["offsets"] + pairs["lengths"] - 1)[pairs["lengths"] > 0]
        newest = np.repeat(pairs["age"][last], lengths)
        decay = np.exp2(-(pairs["age"] - newest) / half_life.total_seconds() / 1e9)
        share = _normalise(decay, conversion, len(conv))
    else:
        codes, names = pd.factorize(eligible["channel"].astype(str))
        share = _data_driven(pairs, codes.astype(np.int64), len(names))
    values = conv["value"].to_numpy(float)
    touch_index = eligible.index.to_numpy()[pairs["touch"]]
    return pd.DataFrame(
        {"conversion": conversion, "touch": touch_index, "share": share, "credit": share * values[conversion]}
    )


def report(
    conversions: Any,
    touches: Any,
    model: Model = "last",
    lookback: timedelta = timedelta(days=30),
    half_life: timedelta = timedelta(days=7),
    clicked_only: bool = False,
) -> AttributionReport:
    """Credits aggregated per (journey, step, channel); cost counts every touch of the group, credited or not."""
    conv = _frame(conversions, CONVERSION_COLUMNS, "conversions")
    tch = _frame(touches, TOUCH_COLUMNS, "touches")
    credits = credit(conv, tch, model, lookback, half_life, clicked_only)
    grouped = tch[["journey", "step", "channel"]].astype(str).groupby(["journey", "step", "channel"], sort=True)
    group = grouped.ngroup().to_numpy()
    names = grouped.size().index
    size = len(names)
    touched = group[credits["touch"].to_numpy()]
    touches_per = np.bincount(group, minlength=size)
    cost = np.bincount(group, tch["cost"].to_numpy(float), minlength=size)
    shares = np.bincount(touched, credits["share"].to_numpy(), minlength=size)
    revenue = np.bincount(touched, credits["credit"].to_numpy(), minlength=size)
    rows = [
        AttributionRow(
            journey=j, step=s, channel=c, touches=int(touches_per[i]), cost=float(cost[i]),
            attributed_conversions=float(shares[i]), attributed_revenue=float(revenue[i]),
            return_on_cost=float(revenue[i] / cost[i]) if cost[i] > 0 else None,
        )
        for i, (j, s, c) in enumerate(names)
    ]  # fmt: skip
    credited = np.zeros(len(conv), bool)
    credited[credits["conversion"].to_numpy()] = True
    values = conv["value"].to_numpy(float)
    return AttributionReport(
        model=model,
        conversions=len(conv),
        revenue=float(values.sum()),
        unattributed_conversions=int((~credited).sum()),
        unattributed_revenue=float(values[~credited].sum()),
        rows=rows,
    )
