"""What attribution reads: conversions (events of a name with a numeric value property) and the messages sent to
the converting customers within the lookback window, across all journeys and channels.

Conversions are events named ``event`` whose ``properties[value]`` is a JSON number, occurred in
``[since, until)``. Touches are the messages sent (status ``sent``) to those customers at a time (``sent_at``, else
``created_at``) between the customer's first conversion minus the window and their last conversion; each says
whether it was clicked (``clicks``, migration 0008). The crediting itself is ``measurement.attribution``.

Both come back as DataFrames read from ``COPY (...) TO STDOUT`` in CSV by pandas' C parser: decoding a hundred
thousand rows into Python objects (asyncpg records, datetimes) took longer than the queries and the crediting
together (``bench/attribution_sql.py``). Times travel as integer microseconds since the epoch and values as
PostgreSQL's shortest exact float text, read back exactly (``float_precision="round_trip"``).
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from asyncpg import Pool

from store.db import Db

_EPOCH_US = "(extract(epoch FROM {0}) * 1000000)::int8"

_CONVERSIONS_SQL = f"""
SELECT e.customer_id, {_EPOCH_US.format("e.occurred_at")} AS time, (e.properties ->> $2)::float8 AS value
  FROM events e
 WHERE e.name = $1 AND jsonb_typeof(e.properties -> $2) = 'number'
   AND e.occurred_at >= coalesce($3::timestamptz, '-infinity') AND e.occurred_at < coalesce($4::timestamptz, 'infinity')
"""

_TOUCHES_SQL = f"""
WITH converting AS (
    -- The numeric test in the aggregates, not the WHERE clause: PostgreSQL cannot estimate how many rows it keeps
    -- (it guesses 0.5 %), and at 100,000 conversions that guess made it pick one index lookup per customer over a
    -- parallel hash join (2.3 s against 1.5 s on a loaded 2-core machine, bench/attribution_sql.py).
    SELECT e.customer_id,
           min(e.occurred_at) FILTER (WHERE jsonb_typeof(e.properties -> $2) = 'number') - $5::interval AS first_at,
           max(e.occurred_at) FILTER (WHERE jsonb_typeof(e.properties -> $2) = 'number') AS last_at
      FROM events e
     WHERE e.name = $1
       AND e.occurred_at >= coalesce($3::timestamptz, '-infinity')
       AND e.occurred_at < coalesce($4::timestamptz, 'infinity')
     GROUP BY e.customer_id
    HAVING bool_or(jsonb_typeof(e.properties -> $2) = 'number')
)
SELECT m.customer_id, {_EPOCH_US.format("coalesce(m.sent_at, m.created_at)")} AS time, m.journey_id, m.step_id,
       m.channel, m.idempotency_key, (m.clicks > 0)::int AS clicked
  FROM converting c JOIN messages m ON m.customer_id = c.customer_id
 WHERE m.status = 'sent' AND m.created_at <= c.last_at
   AND coalesce(m.sent_at, m.created_at) BETWEEN c.first_at AND c.last_at
"""


CONVERSION_TYPES = {"customer": str, "time": "int64", "value": "float64"}
TOUCH_TYPES = {
    "customer": str,
    "time": "int64",
    "journey": str,
    "step": str,
    "channel": str,
    "message_key": str,
    "clicked": "int64",
}


async def _read(db: Db, sql: str, args: tuple[Any, ...], types: dict[str, Any]) -> pd.DataFrame:
    """The query's rows as a DataFrame of ``types``; ``time`` as UTC datetimes, ``clicked`` as booleans."""
    buffer = io.BytesIO()
    if isinstance(db, Pool):
        async with db.acquire() as conn:
            await conn.copy_from_query(sql, *args, output=buffer, format="csv")
    else:
        await db.copy_from_query(sql, *args, output=buffer, format="csv")
    if buffer.tell() == 0:
        frame = pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in types.items()})
    else:
        buffer.seek(0)
        # pandas 3's default float parser reads every value back exactly (float_precision is deprecated).
        frame = pd.read_csv(buffer, names=list(types), dtype=types, keep_default_na=False, na_filter=False)
    frame["time"] = pd.to_datetime(frame["time"], unit="us", utc=True)
    if "clicked" in frame:
        frame["clicked"] = frame["clicked"].astype(bool)
    return frame


async def conversions(
    db: Db, event: str, value_property: str, *, since: datetime | None = None, until: datetime | None = None
) -> pd.DataFrame:
    """``customer``, ``time``, ``value`` of every conversion event in the range."""
    return await _read(db, _CONVERSIONS_SQL, (event, value_property, since, until), CONVERSION_TYPES)


async def touches(
    db: Db,
    event: str,
    value_property: str,
    window: timedelta,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pd.DataFrame:
    """``customer``, ``time``, ``journey``, ``step``, ``channel``, ``message_key``, ``clicked`` of every message
    sent to a converting customer that may fall in the window of one of their conversions."""
    return await _read(db, _TOUCHES_SQL, (event, value_property, since, until, window), TOUCH_TYPES)
