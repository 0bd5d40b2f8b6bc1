"""What the journey report and the channel KPIs count, in SQL: entries, step outcomes, messages, engagement,
conversions and experiment arms, as typed rows.

Every query takes the same ``Filters``. ``since``/``until`` select what happened in that time: entries by when they
entered, step outcomes by when they were recorded, messages by when they were decided, conversions by when they
converted; the engagement of a message (opens, clicks, bounces, unsubscribes) counts whenever it came. ``variant``
keeps the entries that took that split variant at any split step (``holdout``: the control group's entries).

Entries, step outcomes and messages are counted from the count tables of migration 0009 (``store.report_counts``),
so a report reads a few hundred rows however many a journey recorded (``bench/reports.py``); so are the
experiments' arms and the treated arm (migration 0021: entries, conversions and revenue per day, split step and
variant) when the range falls on whole UTC days, as the API's always does. The variant filter, conversions and
engagement read the recorded rows through the indexes of migration 0009.

Opens, clicks, bounces and unsubscribes per message (``message_engagement``) are interim: opens and clicks come from
events (``email_opened`` with ``machine`` true/false, ``email_clicked``, each carrying ``message_key``) through the
trigger of migration 0009; bounces and unsubscribes from hard-bounce suppressions and consent withdrawals made
through the message's unsubscribe link or the preference page, each credited to the customer's latest message
before it. Swap those for the per-message engagement columns once they exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from store import report_counts

UNSUBSCRIBE_SOURCES = ("one_click_unsubscribe", "preference_page")
"""Consent-ledger sources that count as the customer unsubscribing (not bounces, complaints or operators)."""
HOLDOUT = "holdout"
HOLDOUT_STEP = "$holdout"
Scope = Literal["journey", "all"]


@dataclass(frozen=True)
class Filters:
    """What a report covers. ``journey_id`` None: every journey (channel KPIs)."""

    journey_id: str | None = None
    version: int | None = None
    since: datetime | None = None
    """Inclusive."""
    until: datetime | None = None
    """Exclusive."""
    variant: str | None = None

    def params(self) -> tuple[Any, ...]:
        """$1..$5 of every query."""
        return (self.journey_id, self.version, self.since, self.until, self.variant)

    @property
    def scope(self) -> Scope:
        return "all" if self.journey_id is None else "journey"


@dataclass(frozen=True)
class OutcomeCount:
    """Visits of a step that ended with ``outcome`` (and ``reason``: a send's skip or failure reason up to its
    first ``: ``, an exit's reason, a hand-over's reason)."""

    step_id: str
    step_type: str
    outcome: str
    reason: str | None
    visits: int
    entries: int
    """Distinct entries: first visits with this outcome."""


@dataclass(frozen=True)
class MessageCount:
    step_id: str
    channel: str
    messages: int
    sent: int
    skipped: int
    failed: int


@dataclass(frozen=True)
class EngagementCount:
    """Messages of a step and channel opened (any open / a human open), clicked, bounced, unsubscribed from."""

    step_id: str
    channel: str
    opened: int = 0
    opened_human: int = 0
    clicked: int = 0
    bounced: int = 0
    bounced_after_sent: int = 0
    """Bounces reported for messages that were sent (the others were refused at once and recorded failed)."""
    unsubscribed: int = 0


@dataclass(frozen=True)
class ConversionSummary:
    converted: int
    revenue: float
    median_seconds_to_convert: float | None
    """From entry to conversion, over the conversions whose entry is recorded."""


@dataclass(frozen=True)
class ExperimentArm:
    """One arm of a split step (or of the holdout, ``step_id`` ``$holdout``): its entries, those that converted
    (at any time) and their revenue."""

    step_id: str
    variant: str
    entered: int
    converted: int
    revenue: float


@dataclass(frozen=True)
class ChannelConversions:
    """Conversions whose entry's last message sent (``conversions.last_message_key``) went out on ``channel``."""

    channel: str
    converted: int
    revenue: float


def _range(alias: str, column: str) -> str:
    return (
        f"{alias}.{column} >= coalesce($3::timestamptz, '-infinity')"
        f" AND {alias}.{column} < coalesce($4::timestamptz, 'infinity')"
    )


_ARM_ENTRIES = f"""
SELECT a.entry_id FROM step_outcomes a
 WHERE a.journey_id = $1 AND a.step_type IN ('split', 'holdout') AND a.superseded_at IS NULL
   AND ((a.step_type = 'split' AND a.outcome = $5::text)
        OR ($5::text = '{HOLDOUT}' AND a.step_id = '{HOLDOUT_STEP}'))"""


def _where(alias: str, time_column: str, scope: Scope, version_column: str = "journey_version") -> str:
    """The filters on one table: journey (as an index condition), version, time range, variant."""
    journey = f"{alias}.journey_id = $1" if scope == "journey" else "$1::text IS NULL"
    return (
        f"{journey} AND ($2::int IS NULL OR {alias}.{version_column} = $2) AND {_range(alias, time_column)}"
        f" AND ($5::text IS NULL OR {alias}.entry_id IN ({_ARM_ENTRIES}))"
    )


_ENTERED_SQL = f"SELECT count(*) FROM journey_entries e WHERE {_where('e', 'entered_at', 'journey', 'version')}"

_OUTCOMES_SQL = f"""
SELECT o.step_id, min(o.step_type) AS step_type, o.outcome, NULL::text AS reason,
       count(*) AS visits, count(*) FILTER (WHERE o.visit = 1) AS entries
  FROM step_outcomes o WHERE {_where("o", "recorded_at", "journey")} AND o.superseded_at IS NULL
 GROUP BY o.step_id, o.outcome
"""

_REASONS_SQL = f"""
SELECT step_id, step_type, outcome, reason, count(*) AS visits, count(*) FILTER (WHERE visit = 1) AS entries
  FROM (SELECT o.step_id, o.step_type, o.outcome, o.visit, report_reason(o.step_type, o.detail) AS reason
          FROM step_outcomes o
         WHERE {_where("o", "recorded_at", "journey")} AND o.detail ? 'reason' AND o.superseded_at IS NULL) r
 GROUP BY step_id, step_type, outcome, reason
"""


def _messages_sql(scope: Scope) -> str:
    return f"""
SELECT {"m.step_id" if scope == "journey" else "''"} AS step_id, m.channel, count(*) AS messages,
       count(*) FILTER (WHERE m.status = 'sent') AS sent,
       count(*) FILTER (WHERE m.status = 'skipped') AS skipped,
       count(*) FILTER (WHERE m.status = 'failed') AS failed
  FROM messages m WHERE {_where("m", "created_at", scope)}
 GROUP BY 1, 2
"""


# --- engagement (interim: replace with the per-message engagement columns) -----------------------------------

# Opens and clicks: without a variant from the engagement counts (migration 0009: kept from the events by a
# trigger), with one from the messages engaged joined to their message.
_ENGAGED_SQL = """
SELECT {step} AS step_id, m.channel, count(*) FILTER (WHERE e.opened) AS opened,
       count(*) FILTER (WHERE e.opened_human) AS opened_human, count(*) FILTER (WHERE e.clicked) AS clicked
  FROM report_engaged_messages e JOIN messages m ON m.id = e.message_id
 WHERE {where}
 GROUP BY 1, 2
"""


def _lost_sql(scope: Scope) -> str:
    """Bounces and unsubscribes, each credited to the customer's latest message before it (sent, for
    unsubscribes; on the same channel or topic)."""
    step = "m.step_id" if scope == "journey" else "''"
    latest = """
    SELECT m.* FROM messages m
     WHERE m.customer_id = {customer} AND m.created_at <= {at} AND {match}
     ORDER BY m.created_at DESC, m.id DESC LIMIT 1"""
    bounced_message = latest.format(
        customer="c.id", at="s.created_at", match="m.channel = 'email' AND lower(btrim(m.recipient)) = s.address"
    )
    unsubscribed_message = latest.format(
        customer="ce.customer_id",
        at="ce.recorded_at",
        match="m.status = 'sent'"
        " AND CASE WHEN ce.scope = 'channel' THEN m.channel = ce.name ELSE m.topic = ce.name END",
    )
    return f"""
WITH lost AS (
    SELECT m.*, true AS bounced FROM suppressions s
      JOIN customers c ON lower(c.email) = s.address AND c.email IS NOT NULL  -- customers_email_lower, partial
     CROSS JOIN LATERAL ({bounced_message}) m
     WHERE s.channel = 'email' AND s.reason = 'hard_bounce'
    UNION ALL
    SELECT m.*, false FROM consent_events ce
     CROSS JOIN LATERAL ({unsubscribed_message}) m
     WHERE ce.status = 'withdrawn' AND ce.source = ANY($6::text[])
)
SELECT {step} AS step_id, m.channel, count(*) FILTER (WHERE m.bounced) AS bounced,
       count(*) FILTER (WHERE m.bounced AND m.status = 'sent') AS bounced_after_sent,
       count(*) FILTER (WHERE NOT m.bounced) AS unsubscribed
  FROM lost m WHERE {_where("m", "created_at", scope)}
 GROUP BY 1, 2
"""


# --- conversions and arms ------------------------------------------------------------------------------------

_CONVERSIONS_SQL = f"""
SELECT count(*) AS converted, coalesce(sum(c.value), 0)::float8 AS revenue,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.converted_at - (
           SELECT min(e.entered_at) FROM journey_entries e WHERE e.journey_id = c.journey_id AND e.entry_id = c.entry_id
       ))) AS median_seconds
  FROM conversions c WHERE {_where("c", "converted_at", "journey")}
"""

ARMS_SCAN_SQL = f"""
WITH arms AS (
    SELECT a.step_id, CASE WHEN a.step_id = '{HOLDOUT_STEP}' THEN '{HOLDOUT}' ELSE a.outcome END AS variant, a.entry_id
      FROM step_outcomes a
     WHERE a.step_type IN ('split', 'holdout') AND a.visit = 1 AND a.superseded_at IS NULL
       AND {_where("a", "recorded_at", "journey")}
)
SELECT a.step_id, a.variant, count(*) AS entered, count(c.entry_id) AS converted,
       coalesce(sum(c.value), 0)::float8 AS revenue
  FROM arms a LEFT JOIN conversions c ON c.journey_id = $1 AND c.entry_id = a.entry_id
       AND (a.step_id = '{HOLDOUT_STEP}' OR coalesce(c.variants ->> a.step_id, a.variant) = a.variant)
 GROUP BY 1, 2 ORDER BY 1, 2
"""

# The experiments read-out scanning the recorded rows: the reference the count tables of migration 0021 are held
# to (tests/store/test_report_experiment_counts.py), and what a range that does not fall on whole UTC days reads.

# Treated: entries that went through a step of the journey (their first outcome in the range) and were not held out.
TREATED_SCAN_SQL = f"""
WITH treated AS (
    SELECT o.entry_id FROM step_outcomes o
     WHERE o.journey_id = $1 AND o.step_type <> 'holdout' AND o.step_id <> '$exit'
       AND ($2::int IS NULL OR o.journey_version = $2)
     GROUP BY o.entry_id
    HAVING min(o.recorded_at) >= coalesce($3::timestamptz, '-infinity')
       AND min(o.recorded_at) < coalesce($4::timestamptz, 'infinity')
)
SELECT count(*) AS entered, count(c.entry_id) AS converted, coalesce(sum(c.value), 0)::float8 AS revenue
  FROM treated t LEFT JOIN conversions c ON c.journey_id = $1 AND c.entry_id = t.entry_id
 WHERE NOT EXISTS (SELECT 1 FROM step_outcomes h
                    WHERE h.journey_id = $1 AND h.entry_id = t.entry_id AND h.step_id = '{HOLDOUT_STEP}')
"""

_CHANNEL_CONVERSIONS_SQL = f"""
SELECT m.channel, count(*) AS converted, coalesce(sum(c.value), 0)::float8 AS revenue
  FROM conversions c JOIN messages m ON m.idempotency_key = c.last_message_key
 WHERE {_where("c", "converted_at", "all")}
 GROUP BY 1 ORDER BY 1
"""


# Without a variant, the counts come from the count tables (store/report_counts.py); a variant needs the entries,
# so those counts read the recorded rows themselves (a scan of the journey's outcomes or messages).


async def entered(db: Any, filters: Filters) -> int:
    """Entries recorded (router, segment schedules, hand-overs) in the range."""
    if filters.variant is None:
        await report_counts.compact(db, report_counts.ENTRIES, filters.journey_id)
        return int(await db.fetchval(report_counts.ENTERED_SQL, *filters.params()[:4]))
    return int(await db.fetchval(_ENTERED_SQL, *filters.params()))


async def outcome_counts(db: Any, filters: Filters) -> list[OutcomeCount]:
    """Per step and outcome, visits and entries; the rows with a reason also broken down by reason.

    A step with reasons appears twice for those outcomes: once with ``reason`` None (the total) and once per
    reason.
    """
    if filters.variant is None:
        await report_counts.compact(db, report_counts.OUTCOMES, filters.journey_id)
        rows = await db.fetch(report_counts.OUTCOMES_SQL, *filters.params()[:4])
    else:
        rows = [*await db.fetch(_OUTCOMES_SQL, *filters.params()), *await db.fetch(_REASONS_SQL, *filters.params())]
    return [OutcomeCount(**dict(r)) for r in rows]


async def message_counts(db: Any, filters: Filters) -> list[MessageCount]:
    """Per step (journey scope) or per channel (``journey_id`` None: step_id ``''``), messages by status."""
    if filters.variant is None:
        await report_counts.compact(db, report_counts.MESSAGES, filters.journey_id)
        rows = await db.fetch(report_counts.messages_sql(filters.scope == "journey"), *filters.params()[:4])
    else:
        rows = await db.fetch(_messages_sql(filters.scope), *filters.params())
    return [MessageCount(**dict(r)) for r in rows]


async def message_engagement(db: Any, filters: Filters) -> list[EngagementCount]:
    """Per step and channel (journey scope) or per channel, messages opened, clicked, bounced, unsubscribed."""
    by_step = filters.scope == "journey"
    if filters.variant is None:
        await report_counts.compact(db, report_counts.ENGAGEMENT, filters.journey_id)
        engaged = await db.fetch(report_counts.engagement_sql(by_step), *filters.params()[:4])
    else:
        step, where = ("m.step_id" if by_step else "''"), _where("m", "created_at", filters.scope)
        engaged = await db.fetch(_ENGAGED_SQL.format(step=step, where=where), *filters.params())
    lost = await db.fetch(_lost_sql(filters.scope), *filters.params(), list(UNSUBSCRIBE_SOURCES))
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for row in [*engaged, *lost]:
        counts.setdefault((row["step_id"], row["channel"]), {}).update(dict(row))
    return [EngagementCount(**values) for values in counts.values()]


async def conversions(db: Any, filters: Filters) -> ConversionSummary:
    row = await db.fetchrow(_CONVERSIONS_SQL, *filters.params())
    return ConversionSummary(row["converted"], row["revenue"], row["median_seconds"])


def _whole_days(*bounds: datetime | None) -> bool:
    """Whether every bound is a UTC midnight (or None): what the per-day count tables can answer exactly."""
    return all(
        b is None or (b.utcoffset() is not None and b.astimezone(UTC).timetz() == time(0, tzinfo=UTC)) for b in bounds
    )


async def experiment_arms(
    db: Any,
    journey_id: str,
    *,
    version: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ExperimentArm]:
    """Per split step and variant, and the holdout: entries, conversions and revenue, for the statistics.

    Arms come from the step outcomes (a split records its variant as the outcome; the control group records
    ``$holdout`` when its observation window closes or it converts), joined to conversions by entry, so every
    split step of a journey gets its arms. A conversion that carries the run's assignments (``variants``, runs
    since migration 0010) counts in the arm it names for that step. ``since``/``until`` select entries by when
    they took the arm. A held-out customer still being observed is in no arm yet. Read from the count table of
    migration 0021 when ``since``/``until`` are UTC midnights (else from the rows themselves).
    """
    if _whole_days(since, until):
        await report_counts.compact(db, report_counts.EXPERIMENTS, journey_id)
        rows = await db.fetch(report_counts.ARMS_SQL, journey_id, version, since, until)
    else:
        rows = await db.fetch(ARMS_SCAN_SQL, *Filters(journey_id, version, since, until).params())
    return [ExperimentArm(**dict(r)) for r in rows]


async def treated_arm(
    db: Any,
    journey_id: str,
    *,
    version: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ExperimentArm:
    """Everyone not held out, as one arm (``step_id`` ``$holdout``, variant ``treated``) to set against the holdout.

    An entry counts once it has finished a step of the journey (its first step outcome, in ``since``/``until``),
    as a held-out entry counts once its outcome is recorded; entries still on their first step are in no arm.
    """
    if _whole_days(since, until):
        await report_counts.compact(db, report_counts.EXPERIMENTS, journey_id)
        row = await db.fetchrow(report_counts.TREATED_SQL, journey_id, version, since, until)
    else:
        row = await db.fetchrow(TREATED_SCAN_SQL, journey_id, version, since, until)
    return ExperimentArm(HOLDOUT_STEP, "treated", row["entered"], row["converted"], row["revenue"])


ENTERED = "$entered"
CONVERTED = "$converted"


@dataclass(frozen=True)
class DailyCount:
    """One day's figure of one series: ``$entered`` (entries), ``$converted`` (conversions) or a step id (entries
    that finished that step: the report's ``reached``, per day it was recorded)."""

    day: date
    series: str
    count: int


DAILY_SQL = f"""
{report_counts.DAILY_SQL}
UNION ALL
SELECT (c.converted_at AT TIME ZONE 'UTC')::date, '{CONVERTED}', count(*)
  FROM conversions c
 WHERE c.journey_id = $1 AND ($2::int IS NULL OR c.journey_version = $2) AND {_range("c", "converted_at")}
 GROUP BY 1
 ORDER BY 1, 2
"""


async def daily_counts(db: Any, filters: Filters) -> list[DailyCount]:
    """Per UTC day in the range: entries, entries that finished each step, conversions (the journey report's
    ``entered``, ``steps[].reached`` and ``conversions.converted``, one day at a time). Days without any are
    left out. Entries and steps come from the count tables, conversions through ``conversions_report``; one
    statement. ``variant`` is not supported (the count tables do not keep it)."""
    assert filters.journey_id is not None and filters.variant is None
    await report_counts.compact(db, report_counts.ENTRIES, filters.journey_id)
    await report_counts.compact(db, report_counts.OUTCOMES, filters.journey_id)
    rows = await db.fetch(DAILY_SQL, *filters.params()[:4])
    return [DailyCount(r["day"], r["series"], r["count"]) for r in rows]


async def entries_by_day(db: Any, since: date, until: date) -> dict[str, dict[date, int]]:
    """Every journey's entries per UTC day from ``since`` (inclusive) to ``until`` (exclusive), from the count
    table; days without entries are left out."""
    rows = await db.fetch(report_counts.ENTRIES_BY_DAY_SQL, since, until)
    out: dict[str, dict[date, int]] = {}
    for row in rows:
        out.setdefault(row["journey_id"], {})[row["day"]] = row["entries"]
    return out


async def channel_conversions(db: Any, filters: Filters) -> list[ChannelConversions]:
    rows = await db.fetch(_CHANNEL_CONVERSIONS_SQL, *Filters(None, None, filters.since, filters.until).params())
    return [ChannelConversions(**dict(r)) for r in rows]
