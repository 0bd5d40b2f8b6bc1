"""Identity resolution: aliases that resolve to a customer, and merging one profile into another.

An alias is a ``(kind, value)`` pair:

- ``anonymous_id``: a device or cookie id. A visitor known only by it has the profile id ``anon:{id}``: their
  events, journey runs and attributes live under that id until ``identify`` links it to a customer.
- ``customer_id``: the id of a profile that was merged into another one (a lead, a duplicate account).
- ``email`` and ``phone``: addresses linked by ``identify``, so events can name the customer by them.

``identify`` links aliases to a customer in one transaction. A profile behind an alias (``anon:{id}``, or the
other customer id) is merged: its fields by the merge rules below, its events, messages, inbox, journey entries,
step outcomes and conversions moved, its consent carried over, its row kept with ``merged_into`` set and its
personal fields emptied. Its journey runs are listed in the merge log for the router to tell (``orchestration.router``):
a run carries on for the customer, or exits when the customer is already in that journey.

Merge rules, per field (``email``, ``phone``, ``timezone``, ``locale``, and each key of ``attributes``):

1. the customer has no value: the merged profile's value is taken;
2. the customer's value was set explicitly (stated by the customer: the preference page, or a write marked
   ``explicit``): it is kept;
3. otherwise the newer value wins (``field_meta`` records when each field was written); a tie keeps the
   customer's.

Consent: the customer's own ledger wins; a topic or channel the customer never answered takes the merged
profile's state, and a withdrawal in the merged profile newer than the customer's grant is carried over too.
Both are appended to the customer's ledger with source ``merge``; nothing is rewritten.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg

from contracts.journey import workflow_id
from store import customer_values
from store.customers import upsert_customer
from store.db import Connection, Db, Pool, transaction

ANON_PREFIX = "anon:"
AliasKind = Literal["anonymous_id", "customer_id", "email", "phone"]
PROFILE_FIELDS = ("email", "phone", "timezone", "locale")


def anonymous_profile(anonymous_id: str) -> str:
    """The profile id of a visitor known only by ``anonymous_id``."""
    return ANON_PREFIX + anonymous_id


def alias_of(customer_id: str) -> tuple[str, str]:
    """The alias a profile id is looked up under (``anon:X`` is the anonymous id X)."""
    if customer_id.startswith(ANON_PREFIX):
        return "anonymous_id", customer_id[len(ANON_PREFIX) :]
    return "customer_id", customer_id


def normalise(kind: str, value: str) -> str:
    """Emails compare case-insensitively; phone numbers without spaces, dots, dashes and parentheses."""
    if kind == "email":
        return value.strip().lower()
    if kind == "phone":
        return re.sub(r"[\s().-]", "", value)
    return value


class IdentityConflictError(Exception):
    """An alias already belongs to another customer (the API answers 409 naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --- resolution ---------------------------------------------------------------------------------------------


async def linked(db: Db, kind: str, values: list[str]) -> set[str]:
    """Which of ``values`` (aliases of ``kind``) are linked to a customer."""
    rows = await db.fetch(
        "SELECT value FROM identities WHERE kind = $1 AND value = ANY($2::text[])",
        kind,
        [normalise(kind, v) for v in values],
    )
    return {r["value"] for r in rows}


async def resolve_customer(db: Db, customer_id: str) -> str:
    """The customer a profile id stands for now (itself unless it was merged into another)."""
    kind, value = alias_of(customer_id)
    linked = await db.fetchval("SELECT customer_id FROM identities WHERE kind = $1 AND value = $2", kind, value)
    return str(linked) if linked is not None else customer_id


async def adopted_runs(db: Db, customer_ids: list[str]) -> dict[str, dict[str, str]]:
    """Per customer: journey id -> workflow id of the runs adopted from merged profiles."""
    rows = await db.fetch(
        "SELECT customer_id, journey_id, workflow_id FROM adopted_runs WHERE customer_id = ANY($1::text[])",
        customer_ids,
    )
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        out[row["customer_id"]][row["journey_id"]] = row["workflow_id"]
    return dict(out)


async def adopt(db: Db, customer_id: str, journey_id: str, workflow_id: str, merge_id: int) -> None:
    await db.execute(
        """INSERT INTO adopted_runs (customer_id, journey_id, workflow_id, merge_id) VALUES ($1, $2, $3, $4)
           ON CONFLICT (customer_id, journey_id) DO UPDATE
               SET workflow_id = EXCLUDED.workflow_id, merge_id = EXCLUDED.merge_id, adopted_at = now()""",
        customer_id,
        journey_id,
        workflow_id,
        merge_id,
    )


async def forget_adopted(db: Db, customer_id: str, journey_id: str, workflow_id: str) -> None:
    """The adopted run has closed: the customer's events for that journey go to its own workflow id again."""
    await db.execute(
        "DELETE FROM adopted_runs WHERE customer_id = $1 AND journey_id = $2 AND workflow_id = $3",
        customer_id,
        journey_id,
        workflow_id,
    )


# --- merge rules ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldStamp:
    at: datetime
    explicit: bool


def _stamp(row: dict[str, Any], name: str) -> FieldStamp:
    meta = (row.get("field_meta") or {}).get(name) or {}
    at = meta.get("at")
    when = datetime.fromisoformat(at) if isinstance(at, str) else row["updated_at"]
    return FieldStamp(when, bool(meta.get("explicit")))


@dataclass
class FieldMerge:
    """What merging a profile into the customer changes: the winning values, their stamps, the decision log."""

    columns: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    taken: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def merge_fields(customer: dict[str, Any], merged: dict[str, Any]) -> FieldMerge:
    """Apply the merge rules (module docstring) to two profile rows (with ``field_meta`` and ``updated_at``)."""
    out = FieldMerge()
    candidates: list[tuple[str, Any, bool]] = [
        (name, merged.get(name), customer.get(name) is not None) for name in PROFILE_FIELDS
    ]
    mine = customer.get("attributes") or {}
    candidates += [(f"attributes.{k}", v, k in mine) for k, v in (merged.get("attributes") or {}).items()]
    for name, value, customer_has in candidates:
        if value is None:
            continue
        theirs = _stamp(merged, name)
        if customer_has:
            ours = _stamp(customer, name)
            if ours.explicit or theirs.at <= ours.at:
                out.kept.append(name)
                continue
        out.taken.append(name)
        out.meta[name] = {"at": theirs.at.isoformat(), "explicit": theirs.explicit}
        if name.startswith("attributes."):
            out.attributes[name.removeprefix("attributes.")] = value
        else:
            out.columns[name] = value
    return out


# --- identify -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    kind: AliasKind
    value: str
    field: str
    """Where the alias was in the request, for errors (``anonymous_ids[0]``, ``aliases[1].value``)."""


def alias_key(link: Link) -> tuple[str, str]:
    """The (kind, normalised value) an alias is stored and locked under."""
    if link.kind == "customer_id":
        kind, value = alias_of(link.value)
        return kind, normalise(kind, value)
    return link.kind, normalise(link.kind, link.value)


def lock_keys(aliases: Iterable[tuple[str, str]]) -> list[str]:
    """The advisory-lock keys of ``(kind, value)`` aliases, for ``EXCLUSIVE_LOCKS_SQL`` / ``SHARED_LOCKS_SQL``.

    ``identify`` holds them exclusively until it commits; event ingestion takes them shared before it resolves
    (``store.events``), so an event is either stored before a merge (and moved by it) or resolved after it. The
    statements take the locks in sorted order, so no two callers wait on each other in a cycle.
    """
    return sorted({f"{kind}:{normalise(kind, value)}" for kind, value in aliases})


_LOCKS_SQL = """
SELECT count({function}(hashtextextended('parcours.identity:' || k, 0)))
  FROM (SELECT DISTINCT unnest($1::text[]) AS k ORDER BY 1) AS aliases
"""
EXCLUSIVE_LOCKS_SQL = _LOCKS_SQL.format(function="pg_advisory_xact_lock")
SHARED_LOCKS_SQL = _LOCKS_SQL.format(function="pg_advisory_xact_lock_shared")

# Rows that follow the person. Unique keys that would collide (the same entry recorded under both ids) stay behind.
_MOVES: list[tuple[str, str]] = [
    ("events", "UPDATE events SET customer_id = $2 WHERE customer_id = $1"),
    ("messages", "UPDATE messages SET customer_id = $2, updated_at = now() WHERE customer_id = $1"),
    ("inbox_messages", "UPDATE inbox_messages SET customer_id = $2 WHERE customer_id = $1"),
    (
        "devices",
        """UPDATE devices s SET customer_id = $2, updated_at = now() WHERE s.customer_id = $1 AND NOT EXISTS (
               SELECT 1 FROM devices p WHERE p.customer_id = $2 AND p.device_id = s.device_id)""",
    ),
    ("message_deliveries", "UPDATE message_deliveries SET customer_id = $2 WHERE customer_id = $1"),
    (
        "journey_entries",
        """UPDATE journey_entries s SET customer_id = $2 WHERE s.customer_id = $1 AND NOT EXISTS (
               SELECT 1 FROM journey_entries p
                WHERE p.customer_id = $2 AND p.journey_id = s.journey_id AND p.entry_id = s.entry_id)""",
    ),
    (
        "step_outcomes",
        # Superseded attempts always move; a current row moves unless the profile has its own for that visit.
        """UPDATE step_outcomes s SET customer_id = $2 WHERE s.customer_id = $1 AND (s.superseded_at IS NOT NULL
               OR NOT EXISTS (
               SELECT 1 FROM step_outcomes p
                WHERE p.customer_id = $2 AND p.journey_id = s.journey_id AND p.entry_id = s.entry_id
                  AND p.step_id = s.step_id AND p.visit = s.visit AND p.superseded_at IS NULL))""",
    ),
    (
        "conversions",
        """UPDATE conversions s SET customer_id = $2 WHERE s.customer_id = $1 AND NOT EXISTS (
               SELECT 1 FROM conversions p
                WHERE p.customer_id = $2 AND p.journey_id = s.journey_id AND p.entry_id = s.entry_id)""",
    ),
]

_PROFILE_COLUMNS = "id, email, phone, timezone, locale, attributes, field_meta, created_at, updated_at, merged_into"


@dataclass
class IdentifyResult:
    customer_id: str
    created: bool
    merges: list[dict[str, Any]]
    """The merge log rows this call wrote (an alias already linked to the customer writes none)."""


async def identify(
    pool: Pool,
    customer_id: str,
    links: list[Link],
    *,
    traits: dict[str, Any] | None = None,
    explicit: bool = False,
    source: str = "api",
    actor: str = "api",
) -> IdentifyResult:
    """Link ``links`` to ``customer_id`` (created if new) and merge the profiles behind them, in one transaction.

    Safe to repeat: aliases already linked to the customer are left as they are.

    Raises:
        IdentityConflictError: an alias belongs to another customer; nothing was written.
    """
    for attempt in range(3):
        try:
            async with transaction(pool) as conn:
                target = await resolve_customer(conn, customer_id)
                await conn.execute(EXCLUSIVE_LOCKS_SQL, [*lock_keys(alias_key(link) for link in links), target])
                created = (
                    await conn.fetchval(
                        "INSERT INTO customers (id) VALUES ($1) ON CONFLICT (id) DO NOTHING RETURNING true", target
                    )
                    is not None
                )
                if traits:  # not otherwise: bumping updated_at would date the customer's unstamped fields now
                    await upsert_customer(conn, target, explicit=explicit, **traits)
                merges = [
                    row
                    for link in links
                    if (row := await _link(conn, target, link, source=source, actor=actor)) is not None
                ]
                return IdentifyResult(target, created, merges)
        except asyncpg.DeadlockDetectedError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _link(conn: Connection, target: str, link: Link, *, source: str, actor: str) -> dict[str, Any] | None:
    if link.kind == "customer_id" and link.value.startswith(ANON_PREFIX):  # "anon:X" is the anonymous id X
        link = Link("anonymous_id", link.value[len(ANON_PREFIX) :], link.field)
    value = normalise(link.kind, link.value)
    owner = await conn.fetchval("SELECT customer_id FROM identities WHERE kind = $1 AND value = $2", link.kind, value)
    if owner == target:
        return None  # linked before: a repeated identify
    what = {"anonymous_id": "anonymous id", "customer_id": "customer", "email": "email", "phone": "phone"}[link.kind]
    if owner is not None:
        raise IdentityConflictError(link.field, f"{what} '{link.value}' already belongs to customer '{owner}'")
    merged_id = {"anonymous_id": anonymous_profile(value), "customer_id": value}.get(link.kind)
    if merged_id == target:
        raise IdentityConflictError(link.field, f"'{link.value}' is the customer itself")
    fields = FieldMerge()
    moved: dict[str, int] = {}
    runs: list[dict[str, Any]] = []
    if merged_id is not None:
        fields, moved, runs = await _merge_profile(conn, target, merged_id)
    await conn.execute(
        "INSERT INTO identities (kind, value, customer_id, source) VALUES ($1, $2, $3, $4)",
        link.kind,
        value,
        target,
        source,
    )
    row = await conn.fetchrow(
        """INSERT INTO identity_merges
               (customer_id, merged_id, alias_kind, alias_value, source, actor, fields, moved, runs, notified_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $10 THEN clock_timestamp() END)
           RETURNING *""",
        target,
        merged_id,
        link.kind,
        value,
        source,
        actor,
        {"taken": fields.taken, "kept": fields.kept},
        moved,
        runs,
        not runs,
    )
    assert row is not None  # INSERT ... RETURNING always returns the row
    return dict(row)


async def _merge_profile(
    conn: Connection, target: str, merged_id: str
) -> tuple[FieldMerge, dict[str, int], list[dict[str, Any]]]:
    customer = await conn.fetchrow(f"SELECT {_PROFILE_COLUMNS} FROM customers WHERE id = $1 FOR UPDATE", target)
    merged = await conn.fetchrow(f"SELECT {_PROFILE_COLUMNS} FROM customers WHERE id = $1 FOR UPDATE", merged_id)
    assert customer is not None  # identify created it before linking
    fields = FieldMerge()
    if merged is not None:
        fields = merge_fields(dict(customer), dict(merged))
        # Column names come from PROFILE_FIELDS, never from input.
        sets = "".join(f"{name} = ${i + 4}, " for i, name in enumerate(fields.columns))
        await conn.execute(
            f"""UPDATE customers SET attributes = attributes || $2::jsonb, field_meta = field_meta || $1::jsonb,
                    {sets}updated_at = now()
                WHERE id = $3""",
            fields.meta,
            fields.attributes,
            target,
            *fields.columns.values(),
        )
        await _carry_consent(conn, target, merged_id)
        await conn.execute(
            """UPDATE customers SET email = NULL, phone = NULL, timezone = NULL, locale = NULL,
                   attributes = '{}'::jsonb, field_meta = '{}'::jsonb, merged_into = $2, merged_at = now(),
                   updated_at = now()
                WHERE id = $1""",
            merged_id,
            target,
        )
        # Its orders now belong to the customer, whose values the next refresh recomputes.
        await customer_values.forget(conn, merged_id)
    await conn.execute("UPDATE customers SET merged_into = $2 WHERE merged_into = $1", merged_id, target)
    await conn.execute("UPDATE identities SET customer_id = $2 WHERE customer_id = $1", merged_id, target)
    # The merged profile's own merge log becomes the customer's: it is the same person's history.
    await conn.execute("UPDATE identity_merges SET customer_id = $2 WHERE customer_id = $1", merged_id, target)
    # The merged profile's journey runs: every journey it entered, and runs it had adopted itself.
    runs = [
        {"journey_id": r["journey_id"], "workflow_id": workflow_id(r["journey_id"], merged_id), "status": "pending"}
        for r in await conn.fetch(
            "SELECT DISTINCT journey_id FROM journey_entries WHERE customer_id = $1 ORDER BY journey_id", merged_id
        )
    ]
    runs += [
        {"journey_id": r["journey_id"], "workflow_id": r["workflow_id"], "status": "pending"}
        for r in await conn.fetch(
            "DELETE FROM adopted_runs WHERE customer_id = $1 RETURNING journey_id, workflow_id", merged_id
        )
    ]
    moved: dict[str, int] = {}
    for table, sql in _MOVES:
        status = await conn.execute(sql, merged_id, target)
        count = int(status.rsplit(" ", 1)[-1])
        if count:
            moved[table] = count
    return fields, moved, runs


async def _carry_consent(conn: Connection, target: str, merged_id: str) -> None:
    sql = "SELECT scope, name, status, lawful_basis, recorded_at FROM consent_current WHERE customer_id = $1"
    ours = {(r["scope"], r["name"]): r for r in await conn.fetch(sql, target)}
    carried = []
    for row in await conn.fetch(sql, merged_id):
        mine = ours.get((row["scope"], row["name"]))
        newer_withdrawal = (
            mine is not None
            and row["status"] == "withdrawn"
            and mine["status"] == "granted"
            and row["recorded_at"] > mine["recorded_at"]
        )
        if mine is None or newer_withdrawal:
            carried.append((target, row["scope"], row["name"], row["status"], "merge", row["lawful_basis"]))
    if carried:
        await conn.executemany(
            """INSERT INTO consent_events (customer_id, scope, name, status, source, lawful_basis)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            carried,
        )


# --- the merge log --------------------------------------------------------------------------------------------


async def merges(db: Db, customer_id: str, *, limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
    """The customer's merge log, newest first; ``before`` is the ``id`` of the last row of the previous page."""
    rows = await db.fetch(
        """SELECT * FROM identity_merges WHERE customer_id = $1 AND ($2::bigint IS NULL OR id < $2)
            ORDER BY id DESC LIMIT $3""",
        customer_id,
        before,
        limit,
    )
    return [dict(r) for r in rows]


async def identities_of(db: Db, customer_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT kind, value, source, created_at FROM identities WHERE customer_id = $1 ORDER BY created_at, kind",
        customer_id,
    )
    return [dict(r) for r in rows]


async def merged_profiles(db: Db, customer_id: str) -> list[str]:
    """Ids of the profiles merged into the customer, directly or through a chain of merges."""
    rows = await db.fetch("SELECT id FROM customers WHERE merged_into = $1 ORDER BY id", customer_id)
    ids = {r["id"] for r in rows}
    rows = await db.fetch(
        "SELECT merged_id FROM identity_merges WHERE customer_id = $1 AND merged_id IS NOT NULL", customer_id
    )
    ids |= {r["merged_id"] for r in rows}
    return sorted(ids)


async def pending_notifications(db: Db, limit: int, *, min_age_seconds: float) -> list[dict[str, Any]]:
    """Merges whose journey runs have not been told yet, oldest first, locked (``FOR UPDATE SKIP LOCKED``, in
    the caller's transaction) so two drainers never tell the same runs at once."""
    sql = """SELECT * FROM identity_merges
              WHERE notified_at IS NULL AND merged_at < clock_timestamp() - make_interval(secs => $2)
              ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"""
    rows = await db.fetch(sql, limit, min_age_seconds)
    return [dict(r) for r in rows]


async def finish_notification(db: Db, merge_id: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Record what became of the merge's runs; answers the updated merge log row."""
    row = await db.fetchrow(
        "UPDATE identity_merges SET runs = $2, notified_at = clock_timestamp() WHERE id = $1 RETURNING *",
        merge_id,
        runs,
    )
    assert row is not None, f"merge {merge_id} is gone"
    return dict(row)
