"""Geometry of the console's charts, drawn as inline SVG by the templates: rates with their intervals on a shared
axis (experiments), daily lines (the funnel over time) and sparklines (the journeys list).

Only placement lives here; every figure drawn comes from the API's computations (``api.experiments``,
``store.reports``), never from statistics of our own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

PALETTE = 8
"""Line styles (``series-0`` .. ``series-7`` in console.css: a colour and a dash pattern each)."""


def nice_step(span: float, ticks: int = 5) -> float:
    """A 1, 2 or 5 times a power of ten step giving about ``ticks`` intervals over ``span`` (> 0)."""
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)  # pragma: no cover (the loop always returns)


def _percent(value: float) -> str:
    text = f"{value * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text} %"


# --- rates with intervals -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntervalRow:
    label: str
    value: float | None
    low: float | None
    high: float | None
    control: bool = False


@dataclass(frozen=True)
class PlacedInterval:
    label: str
    control: bool
    y: float
    x: float | None
    """The dot (None: no rate, nothing drawn)."""
    x_low: float | None
    x_high: float | None


@dataclass(frozen=True)
class IntervalChart:
    width: int
    height: int
    left: int
    right: int
    axis_y: float
    rows: list[PlacedInterval]
    ticks: list[tuple[float, str]]
    control_x: float | None
    """Where the control's rate is, for a reference line across the rows."""


def intervals(rows: Sequence[IntervalRow], *, width: int = 560, row_height: int = 34, left: int = 150) -> IntervalChart:
    """Rows top to bottom on one axis of rates from 0 to a round value above the highest interval end."""
    right = width - 24
    top = 12
    highest = max([r.high for r in rows if r.high is not None] + [r.value for r in rows if r.value is not None] + [0])
    step = nice_step(max(highest, 0.01))
    end = step * math.ceil(max(highest, 0.01) / step)

    def x(value: float) -> float:
        return round(left + (right - left) * value / end, 1)

    placed = []
    for i, r in enumerate(rows):
        y = top + row_height * i + row_height / 2
        placed.append(
            PlacedInterval(
                label=r.label,
                control=r.control,
                y=y,
                x=None if r.value is None else x(r.value),
                x_low=None if r.low is None else x(r.low),
                x_high=None if r.high is None else x(r.high),
            )
        )
    axis_y = top + row_height * len(rows) + 4
    count = round(end / step)
    ticks = [(x(step * k), _percent(step * k)) for k in range(count + 1)]
    control = next((r for r in rows if r.control and r.value is not None), None)
    return IntervalChart(
        width=width,
        height=int(axis_y + 30),
        left=left,
        right=right,
        axis_y=axis_y,
        rows=placed,
        ticks=ticks,
        control_x=None if control is None or control.value is None else x(control.value),
    )


# --- daily lines --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    values: list[int]


@dataclass(frozen=True)
class PlacedSeries:
    key: str
    label: str
    style: int
    points: str
    end: tuple[float, float]
    total: int


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    series: list[PlacedSeries]


def lines(days: Sequence[date], series: Sequence[Series], *, width: int = 760, height: int = 300) -> LineChart:
    """One line per series over ``days`` (every series has one value per day), y from 0 to a round maximum."""
    left, right, top, bottom = 52, width - 16, 14, height - 44
    highest = max([max(s.values, default=0) for s in series] + [1])
    step = max(1, int(nice_step(highest, 4)))
    end = step * math.ceil(highest / step)
    span = max(len(days) - 1, 1)

    def x(i: int) -> float:
        return round(left + (right - left) * i / span, 1)

    def y(value: int) -> float:
        return round(bottom - (bottom - top) * value / end, 1)

    placed = []
    for n, s in enumerate(series):
        points = [(x(i), y(v)) for i, v in enumerate(s.values)]
        placed.append(
            PlacedSeries(
                key=s.key,
                label=s.label,
                style=n % PALETTE,
                points=" ".join(f"{px},{py}" for px, py in points),
                end=points[-1] if points else (left, bottom),
                total=sum(s.values),
            )
        )
    every = max(1, math.ceil(len(days) / 8))
    x_ticks = [(x(i), d.strftime("%d %b")) for i, d in enumerate(days) if i % every == 0 or i == len(days) - 1]
    if len(x_ticks) > 1 and x_ticks[-1][0] - x_ticks[-2][0] < (right - left) / 16:
        del x_ticks[-2]  # the last day's label would overlap the one before
    y_ticks = [(y(v), str(v)) for v in range(0, end + 1, step)]
    return LineChart(width, height, left, right, top, bottom, x_ticks, y_ticks, placed)


# --- sparklines ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sparkline:
    width: int
    height: int
    points: str
    last: tuple[float, float]


def sparkline(values: Sequence[int], *, width: int = 112, height: int = 26) -> Sparkline:
    """A polyline over ``values`` (oldest first); the highest value touches the top, zero the bottom."""
    pad = 3
    highest = max([*values, 1])
    span = max(len(values) - 1, 1)
    points = [
        (round(pad + (width - 2 * pad) * i / span, 1), round(height - pad - (height - 2 * pad) * v / highest, 1))
        for i, v in enumerate(values)
    ]
    return Sparkline(
        width, height, " ".join(f"{x},{y}" for x, y in points), points[-1] if points else (pad, height - pad)
    )
