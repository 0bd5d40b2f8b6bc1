"""Customer profiles and the consent ledger.

Every function takes a pool or a connection (``store.db.Db``) as its first argument, so callers can compose
them inside their own transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from asyncpg import Record

from store import customer_values
from store.db import Db, transaction

Scope = Literal["channel", "topic"]
ConsentStatus = Literal["granted", "withdrawn"]

# With the computed values (store.customer_values), read in the same statement.
_COLUMNS = (
    "id, email, phone, timezone, locale, attributes, created_at, updated_at, "
    f"{customer_values.values_sql('customers.id')} AS values"
)


def field_stamps_sql(fields: str, explicit: str) -> str:
    """SQL for the ``field_meta`` entries of the fields written now (``fields``: a text[] parameter).

    Each written field gets ``{"at": <time>, "explicit": <bool>}``; the merge rules (``store.identity``) read it.
    """
    return (
        "COALESCE((SELECT jsonb_object_agg(f, jsonb_build_object('at', clock_timestamp(), 'explicit', "
        f"{explicit})) FROM unnest({fields}::text[]) AS f), '{{}}'::jsonb)"
    )


def written_fields(values: dict[str, Any], attributes: dict[str, Any] | None) -> list[str]:
    """The ``field_meta`` names of a write: profile columns given, and ``attributes.<key>`` per attribute."""
    return [k for k, v in values.items() if v is not None] + [f"attributes.{k}" for k in attributes or {}]


# COALESCE keeps a field the caller did not send; attributes merge key by key (jsonb ||).
_UPSERT_SQL = f"""
INSERT INTO customers (id, email, phone, timezone, locale, attributes, field_meta)
VALUES ($1, $2, $3, $4, $5, COALESCE($6::jsonb, '{{}}'::jsonb), {field_stamps_sql("$7", "$8::boolean")})
ON CONFLICT (id) DO UPDATE SET
    email      = COALESCE(EXCLUDED.email, customers.email),
    phone      = COALESCE(EXCLUDED.phone, customers.phone),
    timezone   = COALESCE(EXCLUDED.timezone, customers.timezone),
    locale     = COALESCE(EXCLUDED.locale, customers.locale),
    attributes = customers.attributes || COALESCE($6::jsonb, '{{}}'::jsonb),
    field_meta = customers.field_meta || EXCLUDED.field_meta,
    updated_at = now()
RETURNING {_COLUMNS}
"""

_INSERT_CONSENT_SQL = """
INSERT INTO consent_events (customer_id, scope, name, status, source, lawful_basis)
VALUES ($1, $2, $3, $4, $5, $6)
"""


class UnknownCustomerError(LookupError):
    """The customer does not exist (the API answers 404)."""

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        super().__init__(f"unknown customer '{customer_id}'")


@dataclass(frozen=True)
class Customer:
    """A ``customers`` row as the API and activities see it (no merge bookkeeping)."""

    id: str
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    values: dict[str, Any] | None = None
    """What the last customer-value refresh computed (``store.customer_values``); None before any. Apart from
    ``attributes``: a profile write never changes it."""

    @classmethod
    def from_record(cls, row: Record) -> Customer:
        attributes = row["attributes"]
        if isinstance(attributes, str):  # a connection without the pool's jsonb codec
            attributes = json.loads(attributes)
        values = row.get("values")
        if isinstance(values, str):
            values = json.loads(values)
        return cls(**{**dict(row), "attributes": attributes or {}, "values": values})


@dataclass(frozen=True)
class Consent:
    """The newest status of one channel or topic for a customer (a ``consent_current`` row)."""

    scope: Scope
    name: str
    status: ConsentStatus


async def upsert_customer(
    db: Db,
    customer_id: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    timezone: str | None = None,
    locale: str | None = None,
    attributes: dict[str, Any] | None = None,
    explicit: bool = False,
) -> Customer:
    """Insert the customer or update the fields given (None leaves a field as it is); returns the row.

    ``explicit``: the customer stated these values themselves; a merge keeps them (``store.identity``).
    """
    fields = written_fields({"email": email, "phone": phone, "timezone": timezone, "locale": locale}, attributes)
    row = await db.fetchrow(_UPSERT_SQL, customer_id, email, phone, timezone, locale, attributes, fields, explicit)
    assert row is not None  # INSERT ... RETURNING always returns the row
    return Customer.from_record(row)


async def get_customer(db: Db, customer_id: str, *, lock: bool = False) -> Customer | None:
    """The customer, or None. ``lock``: ``FOR UPDATE``, in the caller's transaction: the row lock every send,
    consent change and erasure of the customer takes (``send_message``, ``record_consents``)."""
    sql = f"SELECT {_COLUMNS} FROM customers WHERE id = $1" + (" FOR UPDATE" if lock else "")
    row = await db.fetchrow(sql, customer_id)
    return Customer.from_record(row) if row else None


async def lock_customers(db: Db, customer_ids: Sequence[str]) -> dict[str, Customer]:
    """``get_customer(lock=True)`` for many customers in one statement, in the caller's transaction: the rows are
    locked in id order, so two callers locking overlapping sets wait for each other instead of deadlocking.
    Customers that do not exist are absent."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM customers WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", list(customer_ids)
    )
    return {row["id"]: Customer.from_record(row) for row in rows}


async def update_attributes(db: Db, customer_id: str, values: dict[str, Any]) -> bool:
    """Merge ``values`` into the customer's attributes key by key (stamped as not explicit, ``store.identity``);
    False when there is no such customer."""
    row = await db.fetchrow(
        f"""UPDATE customers SET attributes = attributes || $2, updated_at = now(),
                   field_meta = field_meta || {field_stamps_sql("$3", "false")}
             WHERE id = $1 RETURNING id""",
        customer_id,
        values,
        written_fields({}, values),
    )
    return row is not None


async def record_consent(
    db: Db,
    customer_id: str,
    scope: Scope,
    name: str,
    status: ConsentStatus,
    *,
    source: str = "api",
    lawful_basis: str | None = None,
) -> None:
    """Append one consent change; see ``record_consents``."""
    await record_consents(db, customer_id, [(scope, name, status)], source=source, lawful_basis=lawful_basis)


async def record_consents(
    db: Db,
    customer_id: str,
    changes: list[tuple[Scope, str, ConsentStatus]],
    *,
    source: str = "api",
    lawful_basis: str | None = None,
) -> None:
    """Append consent changes in one transaction that first locks the customer row.

    The lock serialises with an in-flight send (``send_message`` holds the same row lock while it checks consent
    and calls the provider), so a withdrawal lands either before the check or after the message is recorded.

    Raises:
        UnknownCustomerError: no such customer.
    """
    async with transaction(db) as conn:
        if await conn.fetchval("SELECT id FROM customers WHERE id = $1 FOR UPDATE", customer_id) is None:
            raise UnknownCustomerError(customer_id)
        if changes:
            await conn.executemany(
                _INSERT_CONSENT_SQL,
                [(customer_id, scope, name, status, source, lawful_basis) for scope, name, status in changes],
            )


async def consent_of(db: Db, customer_id: str) -> list[Consent]:
    """The customer's newest consent status per channel and per topic."""
    rows = await db.fetch("SELECT scope, name, status FROM consent_current WHERE customer_id = $1", customer_id)
    return [Consent(row["scope"], row["name"], row["status"]) for row in rows]


async def consents_of(db: Db, customer_ids: Sequence[str]) -> dict[str, list[Consent]]:
    """``consent_of`` for many customers in one statement (a customer with no consent recorded is absent)."""
    rows = await db.fetch(
        "SELECT customer_id, scope, name, status FROM consent_current WHERE customer_id = ANY($1::text[])",
        list(customer_ids),
    )
    out: dict[str, list[Consent]] = {}
    for row in rows:
        out.setdefault(row["customer_id"], []).append(Consent(row["scope"], row["name"], row["status"]))
    return out


async def current_consent(db: Db, customer_id: str) -> dict[str, dict[str, str]]:
    """The newest status per channel and per topic: ``{"channels": {...}, "topics": {...}}``."""
    out: dict[str, dict[str, str]] = {"channels": {}, "topics": {}}
    for consent in await consent_of(db, customer_id):
        out["channels" if consent.scope == "channel" else "topics"][consent.name] = consent.status
    return out


async def find_customers(db: Db, text: str, *, limit: int = 20) -> list[Customer]:
    """Customers whose id is ``text`` or whose email is ``text`` (case-insensitive), else whose id or email
    starts with it; the console's search."""
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM customers
         WHERE id = $1 OR lower(email) = lower($1)
            OR id LIKE $2 ESCAPE '!' OR lower(email) LIKE lower($2) ESCAPE '!'
         ORDER BY (id = $1 OR lower(email) = lower($1)) DESC, id
         LIMIT $3
        """,
        text,
        text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%",
        limit,
    )
    return [Customer.from_record(row) for row in rows]


async def consent_history(db: Db, customer_id: str, *, limit: int = 100, before: int | None = None) -> list[Record]:
    """Every consent change of the customer, newest first (the ``consent_events`` ledger): id, scope, name,
    status, source, lawful_basis, recorded_at; ``before``: only changes older than that id (paging)."""
    return await db.fetch(
        """SELECT id, scope, name, status, source, lawful_basis, recorded_at FROM consent_events
            WHERE customer_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3""",
        customer_id,
        before,
        limit,
    )
