"""Segments in SQL: which customers match a segment's profile conditions and event history, a page at a time.

``ConditionGroup`` is translated to a parameterised WHERE clause: field paths and values are always bind
parameters, never text in the query. The translation follows ``journeys.conditions`` (what a ``branch`` step
sees), so a customer matches here exactly when ``where.evaluate({"profile": profile.as_condition_data()})``
would say so; ``tests/store/test_segments.py`` checks the two against each other. Known differences, all at the
edges: Python's ``float()`` also reads ``"1_000"``, ``"inf"`` and ``"nan"`` as numbers (SQL reads decimal and
exponent forms only), ``1 == True`` holds in Python and not in JSON, and a negative list index in a path means
"from the end" in PostgreSQL and "missing" in Python.

Profile fields: ``profile.email|phone|timezone|locale|id`` are the columns (an attribute of that name when the
column is empty, as in the profile), the computed customer values (``profile.clv``, ``profile.orders_count``: see
``store.customer_values``; missing for a customer without any, whatever their attributes hold), and
``profile.attributes.x`` and ``profile.x`` are ``attributes #> '{x}'``.
Event-history conditions count rows of ``events`` named ``event`` since ``now - within``; their ``where`` is on
the event's properties.

Named segments (table ``segments``) keep an ``Audience`` (the same conditions, without a schedule) under an id;
``count_members`` and ``member_page`` evaluate one. ``count_segment`` counts a named segment exactly and keeps the
result in ``segment_counts`` (with its first members, the time it took and the checksum of the definition it was
counted for); ``stored_count`` reads it back only while the segment's definition is still the one counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from contracts.customer_values import VALUE_FIELDS
from journeys.conditions import Condition, ConditionGroup, _number
from journeys.models import Audience, EventHistoryCondition, Segment
from store.customer_values import values_sql
from store.db import Db, transaction

_COLUMNS = ("email", "phone", "timezone", "locale", "id")
# Strings PostgreSQL can cast to numeric that Python's float() also reads the same way.
_NUMERIC_RE = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"


class Params:
    """Bind parameters of one query: ``add(value)`` returns its placeholder (``$3``)."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"

    def json(self, value: Any) -> str:
        # Sent as text and cast, so the pool's jsonb codec is not involved and any JSON value works.
        return f"({self.add(json.dumps(value))}::text)::jsonb"


def _num(v: str) -> str:
    """The value as a number, when Python's ``_number`` would see one (NULL otherwise)."""
    return (
        f"(CASE WHEN jsonb_typeof({v}) = 'number' THEN ({v} #>> '{{}}')::numeric "
        f"WHEN jsonb_typeof({v}) = 'string' AND ({v} #>> '{{}}') ~ '{_NUMERIC_RE}' "
        f"THEN trim({v} #>> '{{}}')::numeric END)"
    )


def _text(v: str) -> str:
    return f"({v} #>> '{{}}')"


def _is_string(v: str) -> str:
    return f"jsonb_typeof({v}) = 'string'"


def _eq(v: str, expected: Any, p: Params) -> str:
    """``actual == expected``, or both read as the same number. ``v`` is not NULL here."""
    parts = [f"{v} = {p.json(expected)}"]
    number = _number(expected)
    if number is not None:
        parts.append(f"{_num(v)} = {p.add(number)}::numeric")
    return "COALESCE(" + " OR ".join(parts) + ", false)"


def _order(op: str, v: str, expected: Any, p: Params) -> str:
    sql_op = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    # Strings compare by code point, as in Python (COLLATE "C" orders UTF-8 bytes, which is the same order).
    as_string = (
        f'({_is_string(v)} AND {_text(v)} COLLATE "C" {sql_op} {p.add(expected)}::text COLLATE "C")'
        if isinstance(expected, str)
        else "false"
    )
    number = _number(expected)
    if number is None:
        return f"COALESCE({as_string}, false)"
    numeric = f"{_num(v)} {sql_op} {p.add(number)}::numeric"
    return f"COALESCE(CASE WHEN {_num(v)} IS NOT NULL THEN {numeric} ELSE {as_string} END, false)"


def _present(condition: Condition, v: str, p: Params) -> str:
    """The condition on a value that is present (``v`` is not NULL)."""
    op, expected = condition.op, condition.value
    if op == "eq":
        return _eq(v, expected, p)
    if op == "ne":
        return f"NOT {_eq(v, expected, p)}"
    if op in ("gt", "gte", "lt", "lte"):
        return _order(op, v, expected, p)
    if op == "in":
        return "(" + " OR ".join([_eq(v, item, p) for item in expected] or ["false"]) + ")"
    if op == "not_in":
        return "NOT (" + " OR ".join([_eq(v, item, p) for item in expected] or ["false"]) + ")"
    if op == "contains":
        alternatives = [
            f"(jsonb_typeof({v}) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements({v}) AS el(x) "
            f"WHERE {_eq('el.x', expected, p)}))"
        ]
        if isinstance(expected, str):
            alternatives.append(f"({_is_string(v)} AND strpos({_text(v)}, {p.add(expected)}::text) > 0)")
            alternatives.append(f"(jsonb_typeof({v}) = 'object' AND {v} ? {p.add(expected)}::text)")
        return "COALESCE(" + " OR ".join(alternatives) + ", false)"
    if op == "starts_with":
        if not isinstance(expected, str):
            return "false"
        return f"COALESCE({_is_string(v)} AND starts_with({_text(v)}, {p.add(expected)}::text), false)"
    raise ValueError(f"unknown operator {op!r}")


def condition_sql(group: ConditionGroup, value_of: Callable[[str], str], p: Params) -> str:
    """A boolean SQL expression for ``group``; ``value_of(field)`` is the field's jsonb (NULL when missing)."""
    items = group.all if group.all is not None else group.any or []
    parts: list[str] = []
    for item in items:
        if isinstance(item, ConditionGroup):
            parts.append(condition_sql(item, value_of, p))
            continue
        v = value_of(item.field)
        if item.op == "exists":
            parts.append(f"({v} IS NOT NULL AND {v} <> 'null'::jsonb)")
        elif item.op == "not_exists":
            parts.append(f"({v} IS NULL OR {v} = 'null'::jsonb)")
        else:
            missing = "true" if item.op in ("ne", "not_in") else "false"
            parts.append(f"(CASE WHEN {v} IS NULL THEN {missing} ELSE {_present(item, v, p)} END)")
    if not parts:
        return "true" if group.all is not None else "false"
    return "(" + (" AND " if group.all is not None else " OR ").join(parts) + ")"


def profile_value(p: Params, alias: str = "c") -> Callable[[str], str]:
    """The jsonb of a ``profile.*`` field of the customers row ``alias``, as ``Profile.as_condition_data``."""

    def value_of(field: str) -> str:
        path = field.removeprefix("profile.").split(".")
        if path[0] in _COLUMNS:
            column = f"{alias}.{path[0]}"
            if len(path) == 1:
                return f"COALESCE(to_jsonb({column}), {alias}.attributes #> {p.add(path)}::text[])"
            return f"(CASE WHEN {column} IS NULL THEN {alias}.attributes #> {p.add(path)}::text[] END)"
        if path[0] == "attributes":
            return f"({alias}.attributes #> {p.add(path[1:])}::text[])"
        if path[0] in VALUE_FIELDS:
            return f"({values_sql(f'{alias}.id')} #> {p.add(path)}::text[])"
        return f"({alias}.attributes #> {p.add(path)}::text[])"

    return value_of


def property_value(p: Params, alias: str = "e") -> Callable[[str], str]:
    """The jsonb of a property path of the events row ``alias`` (``cart.total``: ``properties.cart.total``)."""
    return lambda field: f"({alias}.properties #> {p.add(field.split('.'))}::text[])"


def history_sql(condition: EventHistoryCondition, now: datetime, p: Params, alias: str = "c") -> str:
    """The event-history condition for the customers row ``alias``."""
    where = [
        f"e.customer_id = {alias}.id",
        f"e.name = {p.add(condition.event)}::text",
        f"e.occurred_at >= {p.add(now - condition.within)}::timestamptz",
    ]
    if condition.where is not None:
        where.append(condition_sql(condition.where, property_value(p), p))
    rows = "SELECT 1 FROM events e WHERE " + " AND ".join(where)
    if condition.count == "none":
        return f"NOT EXISTS ({rows})"
    if condition.count == "any":
        return f"EXISTS ({rows})"
    limit = p.add(condition.count)
    return f"((SELECT count(*) FROM ({rows} LIMIT {limit}::int) AS hits) >= {limit}::int)"


def segment_where(segment: Segment | Audience, now: datetime, p: Params, alias: str = "c") -> str:
    """The WHERE condition (on customers row ``alias``) of the segment's members as of ``now``."""
    parts = []
    if segment.where is not None:
        parts.append(condition_sql(segment.where, profile_value(p, alias), p))
    parts.extend(history_sql(h, now, p, alias) for h in segment.events)
    return " AND ".join(parts) or "true"


async def member_page(
    db: Db, segment: Segment | Audience, now: datetime, *, after: str | None, limit: int
) -> list[str]:
    """Ids of the segment's members after ``after`` (keyset on the customer id), at most ``limit``, in order."""
    p = Params(after or "", limit)
    where = segment_where(segment, now, p)
    # A profile merged into another is not a member: the customer it merged into is.
    sql = f"SELECT c.id FROM customers c WHERE c.id > $1 AND c.merged_into IS NULL AND {where} ORDER BY c.id LIMIT $2"
    return [r["id"] for r in await db.fetch(sql, *p.values)]


async def history_matches(
    db: Db, customer_id: str, conditions: list[EventHistoryCondition], now: datetime
) -> list[bool]:
    """For one customer, whether each event-history condition holds as of ``now`` (one query)."""
    if not conditions:
        return []
    p = Params(customer_id)
    columns = ", ".join(f"({history_sql(c, now, p)}) AS m{i}" for i, c in enumerate(conditions))
    row = await db.fetchrow(f"SELECT {columns} FROM (SELECT $1::text AS id) c", *p.values)
    assert row is not None  # a SELECT without FROM table answers one row
    return [bool(row[f"m{i}"]) for i in range(len(conditions))]


# --- named segments ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentRow:
    id: str
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    def audience(self) -> Audience:
        return Audience.model_validate(self.definition)


async def put_segment(db: Db, segment_id: str, audience: Audience) -> tuple[SegmentRow, bool]:
    """Create or replace a named segment; True when it was created."""
    row = await db.fetchrow(
        """
        INSERT INTO segments (id, definition) VALUES ($1, $2)
        ON CONFLICT (id) DO UPDATE SET definition = EXCLUDED.definition, updated_at = now()
        RETURNING id, definition, created_at, updated_at, (xmax = 0) AS created
        """,
        segment_id,
        audience.model_dump(mode="json", exclude_none=True),
    )
    assert row is not None
    created = bool(row["created"])
    return SegmentRow(row["id"], row["definition"], row["created_at"], row["updated_at"]), created


async def get_segment(db: Db, segment_id: str) -> SegmentRow | None:
    row = await db.fetchrow("SELECT id, definition, created_at, updated_at FROM segments WHERE id = $1", segment_id)
    return SegmentRow(**dict(row)) if row is not None else None


async def list_segments(db: Db) -> list[SegmentRow]:
    rows = await db.fetch("SELECT id, definition, created_at, updated_at FROM segments ORDER BY id")
    return [SegmentRow(**dict(r)) for r in rows]


async def delete_segment(db: Db, segment_id: str) -> bool:
    return bool(await db.execute("DELETE FROM segments WHERE id = $1", segment_id) == "DELETE 1")


_USERS_SQL = """
SELECT 'journey' AS kind, j.id FROM journeys j
  JOIN journey_versions v ON v.journey_id = j.id AND v.version = j.latest_version
 WHERE j.status <> 'archived' AND v.definition -> 'entry' -> 'segment' ->> 'ref' = $1
UNION ALL
SELECT 'broadcast', b.id FROM broadcasts b
 WHERE b.status IN ('scheduled', 'sending', 'paused') AND b.definition -> 'segment' ->> 'ref' = $1
ORDER BY 1, 2
"""


async def segment_users(db: Db, segment_id: str) -> list[tuple[str, str]]:
    """Who names the segment and would stop working without it: ``(kind, id)`` of journeys not archived whose
    latest version enters by it, and of broadcasts scheduled, sending or paused that send to it."""
    return [(r["kind"], r["id"]) for r in await db.fetch(_USERS_SQL, segment_id)]


async def delete_unused_segment(db: Db, segment_id: str) -> tuple[bool, list[tuple[str, str]]]:
    """Delete the segment unless something uses it (``segment_users``): (whether it exists, its users). Nothing
    is deleted when it has users. The segment row is locked while its users are read."""
    async with transaction(db) as conn:
        if await conn.fetchval("SELECT id FROM segments WHERE id = $1 FOR UPDATE", segment_id) is None:
            return False, []
        users = await segment_users(conn, segment_id)
        if not users:
            await conn.execute("DELETE FROM segments WHERE id = $1", segment_id)
        return True, users


async def count_members(db: Db, audience: Audience | Segment, now: datetime) -> int:
    """How many customers match, exactly, as of ``now``."""
    p = Params()
    where = segment_where(audience, now, p)
    value = await db.fetchval(f"SELECT count(*) FROM customers c WHERE c.merged_into IS NULL AND {where}", *p.values)
    return int(value or 0)


# --- the last exact count of a named segment --------------------------------------------------------------------

KEPT_SAMPLE = 100
"""How many first members (by id) a stored count keeps."""


def definition_checksum(definition: dict[str, Any]) -> str:
    """SHA-256 of the definition's canonical JSON (sorted keys): equal for equal definitions, whatever the order."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SegmentCount:
    """An exact count of a named segment: ``members`` as of ``exact_as_of`` (the snapshot and the event windows),
    finished at ``counted_at`` after ``milliseconds``; ``sample`` is the first members by id (at most
    ``KEPT_SAMPLE``); ``checksum`` is ``definition_checksum`` of the definition counted."""

    segment_id: str
    checksum: str
    members: int
    sample: list[str]
    exact_as_of: datetime
    counted_at: datetime
    milliseconds: float

    def age_seconds(self, now: datetime) -> float:
        return max(0.0, (now - self.exact_as_of).total_seconds())


_COUNT_COLUMNS = "segment_id, checksum, members, sample, exact_as_of, counted_at, milliseconds"


async def stored_count(db: Db, row: SegmentRow) -> SegmentCount | None:
    """The last exact count of the segment ``row``, if it was counted for the definition ``row`` holds."""
    found = await db.fetchrow(
        f"SELECT {_COUNT_COLUMNS} FROM segment_counts WHERE segment_id = $1 AND checksum = $2",
        row.id,
        definition_checksum(row.definition),
    )
    return _count_of(found) if found is not None else None


async def stored_counts(db: Db, rows: list[SegmentRow]) -> dict[str, SegmentCount]:
    """``stored_count`` of each segment of ``rows`` that has one for its current definition, by segment id."""
    checksums = {row.id: definition_checksum(row.definition) for row in rows}
    found = await db.fetch(
        f"SELECT {_COUNT_COLUMNS} FROM segment_counts WHERE segment_id = ANY($1::text[])", list(checksums)
    )
    return {r["segment_id"]: _count_of(r) for r in found if checksums.get(r["segment_id"]) == r["checksum"]}


def _count_of(row: Any) -> SegmentCount:
    return SegmentCount(**{**dict(row), "members": int(row["members"]), "sample": list(row["sample"])})


async def record_count(db: Db, row: SegmentRow, count: SegmentCount) -> bool:
    """Keep ``count`` as the segment's last exact count, unless the segment's definition changed (or the segment
    went) while it was counted, or a count as of a later instant is already kept. True when it was kept."""
    kept = await db.fetchval(
        f"""
        INSERT INTO segment_counts ({_COUNT_COLUMNS})
        SELECT s.id, $2, $3, $4, $5, $6, $7 FROM segments s WHERE s.id = $1 AND s.definition = ($8::text)::jsonb
        ON CONFLICT (segment_id) DO UPDATE SET
            checksum = EXCLUDED.checksum, members = EXCLUDED.members, sample = EXCLUDED.sample,
            exact_as_of = EXCLUDED.exact_as_of, counted_at = EXCLUDED.counted_at, milliseconds = EXCLUDED.milliseconds
         WHERE segment_counts.checksum <> EXCLUDED.checksum OR segment_counts.exact_as_of <= EXCLUDED.exact_as_of
        RETURNING true
        """,
        row.id,
        count.checksum,
        count.members,
        count.sample,
        count.exact_as_of,
        count.counted_at,
        count.milliseconds,
        json.dumps(row.definition),
    )
    return bool(kept)


_RECOUNT_LOCK_SQL = "SELECT pg_try_advisory_xact_lock(hashtextextended('parcours.segment-count:' || $1, 0))"


async def count_segment_alone(pool: asyncpg.Pool, row: SegmentRow) -> SegmentCount | None:
    """``count_segment``, unless some process (another API, another worker) counts this segment right now: then
    None and nothing is scanned. The claim is a transaction-scoped advisory lock held open on one connection for
    the count, so it goes with the count however that ends (a cancelled count rolls it back on release)."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(_RECOUNT_LOCK_SQL, row.id):
            return None
        return await count_segment(pool, row)


async def count_segment(db: Db, row: SegmentRow) -> SegmentCount:
    """Count the named segment ``row`` exactly now, with its first ``KEPT_SAMPLE`` members, and keep the result
    (``record_count``). On a pool the count and the first members run on two connections at once."""
    audience, now = row.audience(), datetime.now(UTC)
    began = time.perf_counter()

    async def counted() -> tuple[int, float]:
        p = Params()
        where = segment_where(audience, now, p)
        sql = f"SELECT count(*) FROM customers c WHERE c.merged_into IS NULL AND {where}"
        value = await db.fetchval(sql, *p.values)
        return int(value or 0), round((time.perf_counter() - began) * 1000, 1)

    async def first() -> list[str]:
        return await member_page(db, audience, now, after=None, limit=KEPT_SAMPLE)

    if isinstance(db, asyncpg.Pool):
        (members, elapsed), sample = await asyncio.gather(counted(), first())
    else:
        (members, elapsed), sample = await counted(), await first()
    count = SegmentCount(row.id, definition_checksum(row.definition), members, sample, now, datetime.now(UTC), elapsed)
    await record_count(db, row, count)
    return count
