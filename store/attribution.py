"""What attribution reads: conversions (events of a name with a numeric value property) and the messages sent to
the converting customers within the lookback window, across all journeys and channels.

Conversions are events named ``event`` whose ``properties[value]`` is a JSON number, occurred in
``[since, until)``. Touches are the messages sent (status ``sent``) to those customers at a time (``sent_at``, else
``created_at``) between the customer's first conversion minus the window and their last conversion; each says
whether it was clicked (``clicks``, migration 0008). The crediting itself is ``measurement.attribution``.

Both come back as column lists (not row objects), ready for a DataFrame: a million touches cost one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from store.db import Db

_CONVERSIONS_SQL = """
SELECT e.customer_id, e.occurred_at, (e.properties ->> $2)::float8 AS value
  FROM events e
 WHERE e.name = $1 AND jsonb_typeof(e.properties -> $2) = 'number'
   AND e.occurred_at >= coalesce($3::timestamptz, '-infinity') AND e.occurred_at < coalesce($4::timestamptz, 'infinity')
"""

_TOUCHES_SQL = """
WITH converting AS (
    SELECT e.customer_id, min(e.occurred_at) - $5::interval AS first_at, max(e.occurred_at) AS last_at
      FROM events e
     WHERE e.name = $1 AND jsonb_typeof(e.properties -> $2) = 'number'
       AND e.occurred_at >= coalesce($3::timestamptz, '-infinity')
       AND e.occurred_at < coalesce($4::timestamptz, 'infinity')
     GROUP BY e.customer_id
)
SELECT m.customer_id, coalesce(m.sent_at, m.created_at) AS at, m.journey_id, m.step_id, m.channel,
       m.idempotency_key, m.clicks > 0 AS clicked
  FROM converting c JOIN messages m ON m.customer_id = c.customer_id
 WHERE m.status = 'sent' AND m.created_at <= c.last_at
   AND coalesce(m.sent_at, m.created_at) BETWEEN c.first_at AND c.last_at
"""


@dataclass(frozen=True)
class Columns:
    """Rows as one list per column."""

    names: tuple[str, ...]
    values: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.values[self.names[0]]) if self.names else 0


def _columns(rows: list[Any], names: tuple[str, ...]) -> Columns:
    values: dict[str, list[Any]] = {name: [] for name in names}
    for row in rows:
        for name, value in zip(names, row, strict=True):
            values[name].append(value)
    return Columns(names, values)


async def conversions(
    db: Db, event: str, value_property: str, *, since: datetime | None = None, until: datetime | None = None
) -> Columns:
    """``customer``, ``time``, ``value`` of every conversion event in the range."""
    rows = await db.fetch(_CONVERSIONS_SQL, event, value_property, since, until)
    return _columns(rows, ("customer", "time", "value"))


async def touches(
    db: Db,
    event: str,
    value_property: str,
    window: timedelta,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Columns:
    """``customer``, ``time``, ``journey``, ``step``, ``channel``, ``message_key``, ``clicked`` of every message
    sent to a converting customer that may fall in the window of one of their conversions."""
    rows = await db.fetch(_TOUCHES_SQL, event, value_property, since, until, window)
    return _columns(rows, ("customer", "time", "journey", "step", "channel", "message_key", "clicked"))
