"""Customer lifetime value: each customer's order history and the value they are expected to bring over a horizon.

``customer_values(orders)`` takes orders (columns ``customer, time, value``; a DataFrame or a list of dicts) and
returns, per customer, the order count, revenue, first and last order, average order value and a prediction for the
next ``horizon`` (default 365 days), undiscounted.

Prediction, by ``model`` in the report:

- ``bg_nbd_gamma_gamma`` when at least ``MIN_REPEAT_CUSTOMERS`` customers have ordered more than once: BG/NBD
  (``measurement.btyd``) on repeat orders in weeks gives the expected number of orders in the horizon and the
  probability the customer is still active; Gamma-Gamma on the mean value of repeat orders gives the expected value
  of an order; the prediction is their product. Each order counts as one transaction.
- ``historical_rate`` otherwise (or when either fit fails): average order value x observed order rate x horizon,
  where the rate is orders / max(customer age, horizon) and the age runs from the first order to ``as_of``. Dividing
  by at least the horizon keeps a first-time buyer from being extrapolated as if they ordered every day; a customer
  whose only order was long ago is predicted less than one who ordered yesterday.

For a population too large to hold as orders, the same computation runs in parts: ``summary_from_totals`` takes
per-customer totals aggregated elsewhere (in SQL), ``fit`` chooses and fits the model on the whole population's
summary, and ``predict`` applies it to any part of that population (a page of customers) with the same result as
``customer_values`` on the whole.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from measurement import btyd

MIN_REPEAT_CUSTOMERS = 50
WEEK = pd.Timedelta(days=7)
ORDER_COLUMNS = ("customer", "time", "value")
TOTAL_COLUMNS = ("customer", "orders", "revenue", "first_order", "last_order", "first_value")


class CustomerValue(BaseModel):
    customer: str
    orders: int
    revenue: float
    first_order: datetime
    last_order: datetime
    average_order_value: float
    expected_orders: float  # in the horizon
    probability_alive: float | None  # None with the historical-rate fallback
    predicted_value: float  # in the horizon


class CLVReport(BaseModel):
    model: Literal["bg_nbd_gamma_gamma", "historical_rate"]
    as_of: datetime
    horizon_days: float
    repeat_customers: int
    parameters: dict[str, float]  # the fitted parameters (r, alpha, a, b, p, q, gamma); empty for the fallback
    customers: list[CustomerValue]


def _orders(data: Any) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        frame = data
    else:
        rows = list(data)
        frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(ORDER_COLUMNS))
    missing = [c for c in ORDER_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"orders: missing column(s) {', '.join(missing)}")
    frame = pd.DataFrame(
        {
            "customer": frame["customer"].astype(str),
            "time": pd.to_datetime(frame["time"], utc=True),
            "value": pd.to_numeric(frame["value"]).astype(float),
        }
    )
    if frame["time"].isna().any():
        raise ValueError("orders: time must be set on every order")
    if not np.isfinite(frame["value"]).all() or (frame["value"] < 0).any():
        raise ValueError("orders: value must be a finite amount >= 0")
    return frame.sort_values(["customer", "time"], kind="stable")


def _summary(orders: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    grouped = orders.groupby("customer", sort=True)
    summary = grouped.agg(
        orders=("value", "size"), revenue=("value", "sum"), first_order=("time", "min"), last_order=("time", "max")
    )
    return _derive(summary, grouped["value"].first(), as_of)


def summary_from_totals(totals: Any, as_of: datetime) -> pd.DataFrame:
    """The per-customer summary ``fit`` and ``predict`` take, from totals already aggregated (in SQL): columns
    ``customer, orders, revenue, first_order, last_order, first_value`` (the value of the first order)."""
    frame = totals if isinstance(totals, pd.DataFrame) else pd.DataFrame(list(totals), columns=list(TOTAL_COLUMNS))
    cutoff = _utc(as_of)
    summary = pd.DataFrame(
        {
            "orders": pd.to_numeric(frame["orders"]).astype(int).to_numpy(),
            "revenue": pd.to_numeric(frame["revenue"]).astype(float).to_numpy(),
            "first_order": pd.DatetimeIndex(pd.to_datetime(frame["first_order"], utc=True)),
            "last_order": pd.DatetimeIndex(pd.to_datetime(frame["last_order"], utc=True)),
        },
        index=pd.Index(frame["customer"].astype(str).to_numpy(), name="customer"),
    )
    first_value = pd.to_numeric(frame["first_value"]).astype(float).to_numpy()
    return _derive(summary, first_value, cutoff)


def _derive(summary: pd.DataFrame, first_value: Any, as_of: pd.Timestamp) -> pd.DataFrame:
    repeats = summary["orders"] - 1
    summary["x"] = repeats.astype(float)
    summary["t_x"] = (summary["last_order"] - summary["first_order"]) / WEEK
    summary["T"] = (as_of - summary["first_order"]) / WEEK
    # Mean value of repeat orders (the first order excluded), as Gamma-Gamma is fitted on.
    summary["m"] = np.where(repeats > 0, (summary["revenue"] - first_value) / repeats.clip(lower=1), 0.0)
    return summary


class FittedModel(BaseModel):
    """A model fitted on a whole population, to apply to it in parts (``predict``). Travels in Temporal
    histories: add fields with defaults only."""

    model: Literal["bg_nbd_gamma_gamma", "historical_rate"]
    as_of: datetime
    horizon_days: float
    repeat_customers: int
    customers: int = 0
    parameters: dict[str, float] = {}


def fit(
    summary: pd.DataFrame, as_of: datetime, horizon: timedelta, min_repeat_customers: int = MIN_REPEAT_CUSTOMERS
) -> FittedModel:
    """Fit BG/NBD and Gamma-Gamma on the whole population's summary, or choose the fallback (module docstring)."""
    horizon_weeks = horizon / timedelta(weeks=1)
    repeat_customers = int((summary["x"] > 0).sum())
    parameters: dict[str, float] | None = None
    if repeat_customers >= min_repeat_customers:
        parameters = _fit_bg_nbd_gamma_gamma(summary, horizon_weeks)
    return FittedModel(
        model="bg_nbd_gamma_gamma" if parameters is not None else "historical_rate",
        as_of=_utc(as_of).to_pydatetime(),
        horizon_days=horizon / timedelta(days=1),
        repeat_customers=repeat_customers,
        customers=len(summary),
        parameters=parameters or {},
    )


def _fit_bg_nbd_gamma_gamma(summary: pd.DataFrame, horizon_weeks: float) -> dict[str, float] | None:
    x, t_x, T, m = (summary[c].to_numpy(float) for c in ("x", "t_x", "T", "m"))
    purchases = btyd.fit_bgnbd(x, t_x, T)
    spenders = (x > 0) & (m > 0)
    spend = btyd.fit_gamma_gamma(x[spenders], m[spenders]) if spenders.any() else None
    if purchases is None or spend is None:
        return None
    # The fit is only kept when it predicts a finite value for every customer it was fitted on.
    if not np.all(np.isfinite(_bg_nbd_gamma_gamma(purchases, spend, summary, horizon_weeks)["predicted_value"])):
        return None
    return {**purchases._asdict(), **spend._asdict()}


def _bg_nbd_gamma_gamma(
    purchases: btyd.BgNbd, spend: btyd.GammaGamma, summary: pd.DataFrame, horizon_weeks: float
) -> pd.DataFrame:
    x, t_x, T, m = (summary[c].to_numpy(float) for c in ("x", "t_x", "T", "m"))
    expected = btyd.bgnbd_expected_purchases(purchases, horizon_weeks, x, t_x, T)
    value = btyd.gamma_gamma_expected_spend(spend, x, m)
    alive = btyd.bgnbd_probability_alive(purchases, x, t_x, T)
    return summary.assign(expected_orders=expected, probability_alive=alive, predicted_value=expected * value)


def _historical_rate(summary: pd.DataFrame, horizon_weeks: float) -> pd.DataFrame:
    expected = summary["orders"] / np.maximum(summary["T"], horizon_weeks) * horizon_weeks
    return summary.assign(
        expected_orders=expected,
        probability_alive=None,
        predicted_value=expected * summary["revenue"] / summary["orders"],
    )


def predict(model: FittedModel, summary: pd.DataFrame) -> list[CustomerValue]:
    """Each customer's values under ``model``; ``summary`` (from the same ``as_of``) may be any part of the
    population the model was fitted on."""
    horizon_weeks = model.horizon_days / 7
    if model.model == "bg_nbd_gamma_gamma":
        p = model.parameters
        purchases = btyd.BgNbd(p["r"], p["alpha"], p["a"], p["b"])
        spend = btyd.GammaGamma(p["p"], p["q"], p["gamma"])
        predicted = _bg_nbd_gamma_gamma(purchases, spend, summary, horizon_weeks)
    else:
        predicted = _historical_rate(summary, horizon_weeks)
    return [
        CustomerValue(
            customer=str(name), orders=int(row.orders), revenue=float(row.revenue),
            first_order=row.first_order.to_pydatetime(), last_order=row.last_order.to_pydatetime(),
            average_order_value=float(row.revenue) / int(row.orders), expected_orders=float(row.expected_orders),
            probability_alive=None if pd.isna(row.probability_alive) else float(row.probability_alive),
            predicted_value=float(row.predicted_value),
        )
        for name, row in zip(predicted.index, predicted.itertuples(index=False), strict=True)
    ]  # fmt: skip


def _utc(moment: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def customer_values(
    orders: Any,
    as_of: datetime | None = None,
    horizon: timedelta = timedelta(days=365),
    min_repeat_customers: int = MIN_REPEAT_CUSTOMERS,
) -> CLVReport:
    """Each customer's history and predicted value (see the module docstring). ``as_of`` defaults to the last order;
    naive datetimes are taken as UTC."""
    if horizon <= timedelta(0):
        raise ValueError("horizon must be positive")
    frame = _orders(orders)
    cutoff = _utc(as_of) if as_of is not None else None
    if cutoff is None:
        cutoff = frame["time"].max() if len(frame) else pd.Timestamp.now(tz="UTC")
    if len(frame) and frame["time"].max() > cutoff:
        raise ValueError("as_of: orders after as_of were given")
    summary = _summary(frame, cutoff)
    model = fit(summary, cutoff.to_pydatetime(), horizon, min_repeat_customers)
    return CLVReport(
        model=model.model,
        as_of=cutoff.to_pydatetime(),
        horizon_days=model.horizon_days,
        repeat_customers=model.repeat_customers,
        parameters=model.parameters,
        customers=predict(model, summary),
    )
