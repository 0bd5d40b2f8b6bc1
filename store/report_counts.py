"""The report's count tables (migration 0009): entries, step outcomes and messages per journey, version, UTC day
and key, kept by triggers as +1/-1 delta rows in the writers' transactions; and (migration 0021) the experiments'
arms and the treated arm: entries, conversions and revenue per journey, version, UTC day, split step and variant.

An experiment count depends on two rows written at different times (an entry's arm and its conversion), so
0021's triggers keep what each entry contributes (``report_experiment_entries``) and, when a row of the entry
changes, write the difference as deltas (the entry's old contribution taken out, the new one put in), one writer
of an entry at a time (a row lock per entry).

Reading sums compacted rows and deltas, so it is right whether or not compaction ran. ``compact`` folds a journey's
deltas into its compacted rows (one per key); concurrent compactions and writes are safe: a compaction deletes the
deltas it sums in the same statement that adds them up, a concurrent one skips the rows the first deleted, and
writers only ever insert new deltas.
"""

from __future__ import annotations

from typing import Any

OUTCOMES = "report_outcome_counts"
MESSAGES = "report_message_counts"
ENTRIES = "report_entry_counts"
ENGAGEMENT = "report_engagement_counts"
EXPERIMENTS = "report_experiment_counts"
_COMPACT = {
    EXPERIMENTS: ("journey_id, journey_version, day, step_id, variant", ("entries", "converted", "revenue")),
    ENGAGEMENT: ("journey_id, journey_version, day, step_id, channel", ("opened", "opened_human", "clicked")),
    OUTCOMES: ("journey_id, journey_version, day, step_id, step_type, outcome, reason", ("visits", "entries")),
    MESSAGES: ("journey_id, journey_version, day, step_id, channel, status", ("messages",)),
    ENTRIES: ("journey_id, version, day", ("entries",)),
}


def _compact_sql(table: str, scope: str) -> str:
    keys, sums = _COMPACT[table]
    totals = ", ".join(f"sum({s})" for s in sums)
    updates = ", ".join(f"{s} = {table}.{s} + excluded.{s}" for s in sums)
    return f"""
WITH gone AS (DELETE FROM {table} WHERE {scope} AND delta RETURNING *)
INSERT INTO {table} ({keys}, {", ".join(sums)}, delta)
SELECT {keys}, {totals}, false FROM gone GROUP BY {keys}
ON CONFLICT ({keys}) WHERE NOT delta DO UPDATE SET {updates}
"""


async def compact(db: Any, table: str, journey_id: str | None = None) -> None:
    """Fold the deltas of ``journey_id`` (None: of every journey) in ``table`` into its compacted rows."""
    scope = "journey_id = $1" if journey_id is not None else "$1::text IS NULL"
    await db.execute(_compact_sql(table, scope), journey_id)


def _where(version_column: str = "journey_version") -> str:
    """Journey ($1, None: all), version ($2), days [$3, $4)."""
    return (
        f"($1::text IS NULL OR journey_id = $1) AND ($2::int IS NULL OR {version_column} = $2)"
        " AND day >= coalesce(($3::timestamptz AT TIME ZONE 'UTC')::date, '-infinity')"
        " AND day < coalesce(($4::timestamptz AT TIME ZONE 'UTC')::date, 'infinity')"
    )


ENTERED_SQL = f"SELECT coalesce(sum(entries), 0)::bigint FROM report_entry_counts WHERE {_where('version')}"

OUTCOMES_SQL = f"""
SELECT step_id, step_type, outcome, NULL::text AS reason, sum(visits)::bigint AS visits,
       sum(entries)::bigint AS entries
  FROM report_outcome_counts WHERE {_where()}
 GROUP BY step_id, step_type, outcome HAVING sum(visits) <> 0
UNION ALL
SELECT step_id, step_type, outcome, reason, sum(visits)::bigint, sum(entries)::bigint
  FROM report_outcome_counts WHERE {_where()} AND reason IS NOT NULL
 GROUP BY step_id, step_type, outcome, reason HAVING sum(visits) <> 0
"""


def messages_sql(by_step: bool) -> str:
    step = "step_id" if by_step else "''"
    return f"""
SELECT {step} AS step_id, channel, sum(messages)::bigint AS messages,
       coalesce(sum(messages) FILTER (WHERE status = 'sent'), 0)::bigint AS sent,
       coalesce(sum(messages) FILTER (WHERE status = 'skipped'), 0)::bigint AS skipped,
       coalesce(sum(messages) FILTER (WHERE status = 'failed'), 0)::bigint AS failed
  FROM report_message_counts WHERE {_where()}
 GROUP BY 1, 2 HAVING sum(messages) <> 0
"""


def engagement_sql(by_step: bool) -> str:
    step = "step_id" if by_step else "''"
    return f"""
SELECT {step} AS step_id, channel, sum(opened)::bigint AS opened, sum(opened_human)::bigint AS opened_human,
       sum(clicked)::bigint AS clicked
  FROM report_engagement_counts WHERE {_where()}
 GROUP BY 1, 2
"""


DAILY_SQL = f"""
SELECT day, '$entered' AS series, sum(entries)::bigint AS count
  FROM report_entry_counts WHERE {_where("version")}
 GROUP BY day HAVING sum(entries) <> 0
UNION ALL
SELECT day, step_id, sum(entries)::bigint
  FROM report_outcome_counts WHERE {_where()}
 GROUP BY day, step_id HAVING sum(entries) <> 0
"""
"""Per UTC day: entries (series ``$entered``) and, per step, the entries that finished it (first visits)."""

ENTRIES_BY_DAY_SQL = """
SELECT journey_id, day, sum(entries)::bigint AS entries
  FROM report_entry_counts WHERE day >= $1::date AND day < $2::date
 GROUP BY journey_id, day HAVING sum(entries) <> 0
"""
"""Every journey's entries per UTC day in [$1, $2)."""


_DAYS = (
    " AND day >= coalesce(($3::timestamptz AT TIME ZONE 'UTC')::date, '-infinity')"
    " AND day < coalesce(($4::timestamptz AT TIME ZONE 'UTC')::date, 'infinity')"
)

ARMS_SQL = f"""
SELECT step_id, variant, sum(entries)::bigint AS entered, sum(converted)::bigint AS converted,
       sum(revenue)::float8 AS revenue
  FROM report_experiment_counts
 WHERE journey_id = $1 AND step_id <> '$treated' AND ($2::int IS NULL OR journey_version = $2){_DAYS}
 GROUP BY step_id, variant HAVING sum(entries) <> 0
 ORDER BY 1, 2
"""
"""Per split step and variant (and ``$holdout``/``holdout``): entries by the day they took the arm, their
conversions and revenue."""

TREATED_SQL = f"""
SELECT coalesce(sum(entries), 0)::bigint AS entered, coalesce(sum(converted), 0)::bigint AS converted,
       coalesce(sum(revenue), 0)::float8 AS revenue
  FROM report_experiment_counts
 WHERE journey_id = $1 AND step_id = '$treated' AND journey_version IS NOT DISTINCT FROM $2::int{_DAYS}
"""
"""Entries not held out, by the day of their first step outcome (of version $2, or of any: the NULL rows)."""
