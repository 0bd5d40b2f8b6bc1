"""Data rights in PostgreSQL: the consent history, a customer's export, and erasure.

Erasure deletes what identifies a person and keeps the analytics rows, with the customer id replaced by a
pseudonym: ``pseudonym(secret, id)`` is an HMAC-SHA256 of the id, stable (the same id always gives the same
pseudonym, so journey counts still add up and a second erasure finds the first) and irreversible without the
secret. Everything runs in one transaction that first locks the customer row, the lock every send and consent
change takes: a send in flight finishes before, or finds no customer after.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from store import customer_values, deliveries, identity, suppressions
from store.db import Db, Pool, transaction

# Domain separation for the pseudonym key, derived from a secret the operator already sets (see README).
PSEUDONYM_LABEL = b"parcours/erasure-pseudonym/v1"
PSEUDONYM_PREFIX = "erased-"


def pseudonym(secret: bytes, customer_id: str) -> str:
    """The stable, irreversible stand-in for ``customer_id`` in the analytics kept after erasure."""
    key = hmac.new(secret, PSEUDONYM_LABEL, hashlib.sha256).digest()
    return PSEUDONYM_PREFIX + hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:32]


async def consent_history(db: Db, customer_id: str, *, limit: int, before: int | None = None) -> list[dict[str, Any]]:
    """Ledger rows of the customer, newest first; ``before`` is the ``id`` of the last row of the previous page."""
    rows = await db.fetch(
        """SELECT id, scope, name, status, source, lawful_basis, recorded_at FROM consent_events
            WHERE customer_id = $1 AND ($2::bigint IS NULL OR id < $2)
            ORDER BY id DESC LIMIT $3""",
        customer_id,
        before,
        limit,
    )
    return [dict(r) for r in rows]


# A customer's whole consent ledger, oldest first.
_LEDGER_SQL = (
    "SELECT id, scope, name, status, source, lawful_basis, recorded_at FROM consent_events"
    " WHERE customer_id = $1 ORDER BY id"
)


# Whether anything at all is stored under an id, profile or not.
_ANY_ROWS_SQL = """
SELECT EXISTS (SELECT 1 FROM events WHERE customer_id = $1)
    OR EXISTS (SELECT 1 FROM messages WHERE customer_id = $1)
    OR EXISTS (SELECT 1 FROM consent_events WHERE customer_id = $1)
    OR EXISTS (SELECT 1 FROM journey_entries WHERE customer_id = $1)
    OR EXISTS (SELECT 1 FROM step_outcomes WHERE customer_id = $1)
    OR EXISTS (SELECT 1 FROM conversions WHERE customer_id = $1)
    OR EXISTS (SELECT 1 FROM inbox_messages WHERE customer_id = $1)
    OR EXISTS (SELECT 1 FROM broadcast_recipients WHERE customer_id = $1)
"""


async def export_customer(db: Db, customer_id: str) -> dict[str, Any] | None:
    """Everything stored about the customer, as one document; None when nothing at all is stored under the id.

    An id with events, messages or other rows but no profile (events sent before any ``PUT /v1/customers``) is
    exported too, with ``profile`` null.
    """
    async with transaction(db, isolation="repeatable_read", readonly=True) as conn:
        profile = await conn.fetchrow(
            "SELECT id, email, phone, timezone, locale, attributes, created_at, updated_at"
            " FROM customers WHERE id = $1",
            customer_id,
        )
        if profile is None and not await conn.fetchval(_ANY_ROWS_SQL, customer_id):
            return None

        async def rows(sql: str, person: str = customer_id) -> list[dict[str, Any]]:
            return [dict(r) for r in await conn.fetch(sql, person)]

        return {
            "profile": dict(profile) if profile is not None else None,
            # What the customer-value refresh computed from their orders (None before any).
            "values": await customer_values.values_of(conn, customer_id),
            "consent": {
                "current": await rows(
                    "SELECT scope, name, status, source, lawful_basis, recorded_at FROM consent_current"
                    " WHERE customer_id = $1 ORDER BY scope, name"
                ),
                "history": await rows(_LEDGER_SQL),
            },
            "events": await rows(
                "SELECT event_id, name, properties, occurred_at, received_at FROM events"
                " WHERE customer_id = $1 ORDER BY occurred_at, event_id"
            ),
            "messages": await rows(
                "SELECT id, journey_id, journey_version, step_id, channel, topic, kind, status, reason, recipient,"
                " rendered, provider_message_id, choice, created_at, sent_at, delivered_at, failed_at, provider_status,"
                " segments, encoding, cost FROM messages"
                " WHERE customer_id = $1 ORDER BY created_at, id"
            ),
            "inbox": await rows(
                "SELECT id, title, body, data, created_at, read_at FROM inbox_messages"
                " WHERE customer_id = $1 ORDER BY created_at, id"
            ),
            "devices": await rows(
                "SELECT device_id, platform, token, subscription, app, locale, active, deactivated_at,"
                " deactivated_reason, created_at, updated_at FROM devices WHERE customer_id = $1"
                " ORDER BY created_at, device_id"
            ),
            # Which of those devices each push reached (or why not).
            "push_deliveries": await deliveries.deliveries_of_customer(conn, customer_id),
            # The broadcasts the customer was in the audience of, and what became of their message there.
            "broadcasts": await rows(
                "SELECT r.broadcast_id, b.definition ->> 'name' AS broadcast_name, r.status, r.reason, r.channel,"
                " r.due_at, r.decided_at FROM broadcast_recipients r JOIN broadcasts b ON b.id = r.broadcast_id"
                " WHERE r.customer_id = $1 ORDER BY r.due_at, r.broadcast_id"
            ),
            "journey_entries": await rows(
                "SELECT journey_id, entry_id, version, source, entered_at FROM journey_entries"
                " WHERE customer_id = $1 ORDER BY entered_at"
            ),
            "step_outcomes": await rows(
                "SELECT journey_id, journey_version, entry_id, step_id, visit, step_type, outcome, detail, recorded_at,"
                " superseded_at FROM step_outcomes WHERE customer_id = $1 ORDER BY recorded_at, id"
            ),
            "conversions": await rows(
                "SELECT journey_id, journey_version, entry_id, event_name, value, variant, converted_at"
                " FROM conversions WHERE customer_id = $1 ORDER BY converted_at"
            ),
            "suppressions": await suppressions.suppressions_for_addresses(
                conn, [("email", profile["email"]), ("sms", profile["phone"])] if profile is not None else []
            ),
            "identities": await identity.identities_of(conn, customer_id),
            "merges": await rows(
                "SELECT id, merged_id, alias_kind, alias_value, source, actor, fields, moved, runs, merged_at"
                " FROM identity_merges WHERE customer_id = $1 ORDER BY id"
            ),
            # What stays under the ids of profiles merged into the customer: their own consent ledgers.
            "merged_profiles": [
                {"id": merged_id, "consent_history": await rows(_LEDGER_SQL, merged_id)}
                for merged_id in await identity.merged_profiles(conn, customer_id)
            ],
        }


# An id inside another text (segment and handoff entry ids end with, or contain, ":{customer}").
def _scrub(column: str) -> str:
    return (
        f"CASE WHEN right({column}, length($1) + 1) = ':' || $1"
        f" THEN left({column}, length({column}) - length($1)) || $2"
        f" ELSE replace({column}, ':' || $1 || ':', ':' || $2 || ':') END"
    )


# Each statement takes $1 = customer id, $2 = pseudonym. Rows that already exist under the pseudonym (a run that
# recorded again after an earlier erasure) are dropped first rather than colliding with a unique constraint.
_ERASE_STATEMENTS: list[tuple[str, str]] = [
    ("consent_events", "DELETE FROM consent_events WHERE customer_id = $1"),
    ("inbox_messages", "DELETE FROM inbox_messages WHERE customer_id = $1"),
    ("devices", "DELETE FROM devices WHERE customer_id = $1"),
    ("message_deliveries", "DELETE FROM message_deliveries WHERE customer_id = $1"),
    ("events", "DELETE FROM events WHERE customer_id = $1"),
    (
        "messages",
        f"""UPDATE messages SET customer_id = $2,
                idempotency_key = $2 || ':' || encode(sha256(convert_to(idempotency_key, 'UTF8')), 'hex'),
                entry_id = {_scrub("entry_id")},
                recipient = NULL, rendered = NULL, provider_response = NULL, error = NULL, provider_error = NULL,
                reason = CASE WHEN reason LIKE 'provider\\_rejected:%' THEN 'provider_rejected' ELSE reason END,
                choice = choice - 'failed',
                updated_at = now()
            WHERE customer_id = $1""",
    ),
    (
        "step_outcomes (duplicates)",
        f"""DELETE FROM step_outcomes s WHERE s.customer_id = $1 AND s.superseded_at IS NULL AND EXISTS (
                SELECT 1 FROM step_outcomes p WHERE p.customer_id = $2 AND p.journey_id = s.journey_id
                   AND p.entry_id = {_scrub("s.entry_id")} AND p.step_id = s.step_id AND p.visit = s.visit
                   AND p.superseded_at IS NULL)""",
    ),
    (
        "step_outcomes",
        f"""UPDATE step_outcomes SET customer_id = $2, entry_id = {_scrub("entry_id")},
                workflow_id = journey_id || ':' || $2,
                detail = detail - 'response' - 'body' - 'recipient' - 'error' - 'event_id'
            WHERE customer_id = $1""",
    ),
    (
        "conversions (duplicates)",
        f"""DELETE FROM conversions s WHERE s.customer_id = $1 AND EXISTS (
                SELECT 1 FROM conversions p WHERE p.customer_id = $2 AND p.journey_id = s.journey_id
                   AND p.entry_id = {_scrub("s.entry_id")})""",
    ),
    (
        "conversions",
        f"""UPDATE conversions SET customer_id = $2, entry_id = {_scrub("entry_id")}, event_id = '',
                last_message_key = NULL
            WHERE customer_id = $1""",
    ),
    (
        "journey_entries (duplicates)",
        f"""DELETE FROM journey_entries s WHERE s.customer_id = $1 AND EXISTS (
                SELECT 1 FROM journey_entries p WHERE p.customer_id = $2 AND p.journey_id = s.journey_id
                   AND p.entry_id = {_scrub("s.entry_id")})""",
    ),
    (
        "journey_entries",
        f"UPDATE journey_entries SET customer_id = $2, entry_id = {_scrub('entry_id')} WHERE customer_id = $1",
    ),
    # A broadcast still sending never writes to the erased customer: their place in its audience is cancelled.
    (
        "broadcast_recipients (pending)",
        "UPDATE broadcast_recipients SET status = 'cancelled', reason = 'erased'"
        " WHERE customer_id = $1 AND status = 'pending'",
    ),
    (
        "broadcast_recipients (duplicates)",
        """DELETE FROM broadcast_recipients s WHERE s.customer_id = $1 AND EXISTS (
                SELECT 1 FROM broadcast_recipients p WHERE p.customer_id = $2 AND p.broadcast_id = s.broadcast_id)""",
    ),
    ("broadcast_recipients", "UPDATE broadcast_recipients SET customer_id = $2 WHERE customer_id = $1"),
    ("identities", "DELETE FROM identities WHERE customer_id = $1"),
    ("adopted_runs", "DELETE FROM adopted_runs WHERE customer_id = $1"),
    ("identity_merges", "DELETE FROM identity_merges WHERE customer_id = $1"),
    ("customer_values", "DELETE FROM customer_values WHERE customer_id = $1"),
    ("customers", "DELETE FROM customers WHERE id = $1"),
]


async def erase_customer(
    pool: Pool, customer_id: str, secret: bytes, *, requested_at: datetime, complete: bool
) -> dict[str, Any]:
    """Erase the customer's personal data in one transaction and record it in ``erasures``.

    ``complete``: every journey run of the customer has closed (else ``completed_at`` stays NULL and a later call
    sweeps what the runs still recorded). Safe to repeat. Returns the ``erasures`` row with this pass's counts.
    """
    alias = pseudonym(secret, customer_id)
    counts: dict[str, int] = {}
    async with transaction(pool) as conn:
        # The lock sends and consent changes take: a send in flight finishes first.
        await conn.fetchval("SELECT id FROM customers WHERE id = $1 FOR UPDATE", customer_id)
        # Profiles merged into the customer are the same person: erased with them, each under its own pseudonym.
        merged = await identity.merged_profiles(conn, customer_id)
        for person in [*merged, customer_id]:
            for name, sql in _ERASE_STATEMENTS:
                args = (person, pseudonym(secret, person)) if "$2" in sql else (person,)
                status = await conn.execute(sql, *args)
                affected = int(status.rsplit(" ", 1)[-1])
                if "(" not in name:
                    counts[name] = counts.get(name, 0) + affected
        previous = await conn.fetchrow("SELECT counts FROM erasures WHERE pseudonym = $1 FOR UPDATE", alias)
        total = dict(previous["counts"]) if previous else {}
        for name, n in counts.items():
            total[name] = int(total.get(name, 0)) + n
        row = await conn.fetchrow(
            """INSERT INTO erasures (pseudonym, requested_at, completed_at, counts)
               VALUES ($1, $2, CASE WHEN $3 THEN clock_timestamp() END, $4)
               ON CONFLICT (pseudonym) DO UPDATE SET
                   requests = erasures.requests + 1,
                   completed_at = CASE WHEN $3 THEN clock_timestamp() ELSE erasures.completed_at END,
                   counts = $4
               RETURNING pseudonym, requested_at, completed_at, requests, counts""",
            alias,
            requested_at,
            complete,
            total,
        )
    assert row is not None  # INSERT ... RETURNING always returns the row
    return {**dict(row), "this_request": counts}
