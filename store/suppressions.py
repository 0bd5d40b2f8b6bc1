"""Suppressed addresses: never message them again on that channel, whoever the customer is.

A hard bounce or a spam complaint (reported by a provider's webhook, or an SMTP 5xx naming a dead mailbox) puts
the address here. The send activity checks this table inside its transaction, for transactional messages too:
a dead mailbox is dead for receipts as well, and a complaint means the recipient asked us to stop.

Addresses are normalised (``normalize_address``) so a lookup finds them whatever their case.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from store import customers as customer_store
from store.db import Db, Pool, connection, transaction

SuppressionReason = Literal["hard_bounce", "complaint", "manual"]
SuppressedChannel = Literal["email", "sms"]

# The consent-ledger source recorded when a suppression withdraws a customer's channel consent.
CONSENT_SOURCE = {"hard_bounce": "bounce", "complaint": "complaint", "manual": "api"}

_COLUMNS = "id, channel, address, reason, source, detail, created_at"


@dataclass(frozen=True)
class Suppression:
    """A suppressed address (normalised) and why."""

    id: int
    channel: SuppressedChannel
    address: str
    reason: SuppressionReason
    source: str
    """Who reported it: ``smtp``, a provider webhook, ``api``."""
    detail: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Suppressed:
    """What ``suppress`` did."""

    address: str
    new: bool
    """False: the address was suppressed already."""
    customers_withdrawn: int
    """Customers whose channel consent this withdrew."""


def normalize_address(channel: str, address: str) -> str:
    """Emails compare case-insensitively (in practice); phone numbers without spaces or punctuation but ``+``."""
    address = address.strip()
    if channel == "email":
        return address.lower()
    return "".join(c for c in address if c.isdigit() or c == "+")


async def suppression_for(db: Db, channel: str, address: str | None) -> str | None:
    """The reason ``address`` is suppressed on ``channel``, or None."""
    if not address or channel not in ("email", "sms"):
        return None
    reason: str | None = await db.fetchval(
        "SELECT reason FROM suppressions WHERE channel = $1 AND address = $2",
        channel,
        normalize_address(channel, address),
    )
    return reason


async def suppressions_for(db: Db, addresses: Iterable[tuple[str, str | None]]) -> dict[tuple[str, str], str]:
    """``suppression_for`` for many (channel, address) pairs in one statement: the suppressed ones, keyed by
    (channel, normalised address), with the reason."""
    pairs = {(c, normalize_address(c, a)) for c, a in addresses if a and c in ("email", "sms")}
    if not pairs:
        return {}
    rows = await db.fetch(
        """SELECT s.channel, s.address, s.reason FROM suppressions s
             JOIN unnest($1::text[], $2::text[]) AS p(channel, address)
               ON s.channel = p.channel AND s.address = p.address""",
        [c for c, _ in pairs],
        [a for _, a in pairs],
    )
    return {(r["channel"], r["address"]): r["reason"] for r in rows}


async def add_suppression(
    db: Db,
    channel: SuppressedChannel,
    address: str,
    reason: SuppressionReason,
    *,
    source: str,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Suppress ``address``; True when it was not suppressed before. Locks no customer row.

    A later report keeps the first row (a hard bounce then a complaint stays ``hard_bounce``): the address is
    suppressed either way.
    """
    inserted = await db.fetchval(
        """INSERT INTO suppressions (channel, address, reason, source, detail) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (channel, address) DO NOTHING RETURNING id""",
        channel,
        normalize_address(channel, address),
        reason,
        source,
        detail or {},
    )
    return inserted is not None


async def suppress(
    pool: Pool,
    channel: SuppressedChannel,
    address: str,
    reason: SuppressionReason,
    *,
    source: str,
    detail: dict[str, Any] | None = None,
) -> Suppressed:
    """Suppress ``address`` and withdraw ``channel`` consent of every customer with that address, in one
    transaction. The consent change goes through ``record_consents`` (customer row lock, ledger source
    ``bounce``/``complaint``); a customer already withdrawn gets no second ledger row, so a report delivered
    twice (SNS is at-least-once) changes nothing the second time.

    """
    normalized = normalize_address(channel, address)
    consent_source = CONSENT_SOURCE[reason]
    async with transaction(pool) as conn:
        new = await add_suppression(conn, channel, normalized, reason, source=source, detail=detail)
        column = "lower(email)" if channel == "email" else "regexp_replace(phone, '[^0-9+]', '', 'g')"
        # In id order, so two reports touching the same customers lock them in the same order.
        ids = [
            r["id"] for r in await conn.fetch(f"SELECT id FROM customers WHERE {column} = $1 ORDER BY id", normalized)
        ]
        withdrawn = 0
        for customer_id in ids:
            current = await conn.fetchval(
                "SELECT status FROM consent_current WHERE customer_id = $1 AND scope = 'channel' AND name = $2",
                customer_id,
                channel,
            )
            if current == "withdrawn":
                continue
            try:
                await customer_store.record_consent(
                    conn, customer_id, "channel", channel, "withdrawn", source=consent_source
                )
            except customer_store.UnknownCustomerError:
                continue  # erased meanwhile
            withdrawn += 1
    return Suppressed(normalized, new, withdrawn)


async def add_manual(
    db: Db, channel: SuppressedChannel, address: str, *, detail: dict[str, Any]
) -> tuple[bool, Suppression]:
    """Suppress ``address`` by hand (reason ``manual``, source ``api``), touching nobody's consent; whether it
    is new, and the row (the earlier one, with its reason, when it was suppressed already)."""
    async with connection(db) as conn:
        new = await add_suppression(conn, channel, address, "manual", source="api", detail=detail)
        row = await get_suppression(conn, channel, address)
    assert row is not None  # inserted above, or there already
    return new, row


async def get_suppression(db: Db, channel: str, address: str) -> Suppression | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM suppressions WHERE channel = $1 AND address = $2",
        channel,
        normalize_address(channel, address),
    )
    return Suppression(**dict(row)) if row is not None else None


async def list_suppressions(
    db: Db,
    *,
    channel: str | None = None,
    address: str | None = None,
    reason: str | None = None,
    before: int | None = None,
    limit: int,
) -> list[Suppression]:
    """Suppressions, newest first, filtered by what is given (``address`` with its ``channel``: it is compared
    normalised); ``before`` is the ``id`` of the last row of the previous page."""
    normalized = normalize_address(channel, address) if address is not None and channel is not None else address
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM suppressions
            WHERE ($1::text IS NULL OR channel = $1) AND ($2::text IS NULL OR address = $2)
              AND ($3::text IS NULL OR reason = $3) AND ($4::bigint IS NULL OR id < $4)
            ORDER BY id DESC LIMIT $5""",
        channel,
        normalized,
        reason,
        before,
        limit,
    )
    return [Suppression(**dict(r)) for r in rows]


async def lift_suppression(db: Db, channel: str, address: str) -> Suppression | None:
    """Remove the suppression of ``address``, whatever its reason; the row removed, or None. Consent withdrawn
    by a bounce or complaint stays withdrawn."""
    row = await db.fetchrow(
        f"DELETE FROM suppressions WHERE channel = $1 AND address = $2 RETURNING {_COLUMNS}",
        channel,
        normalize_address(channel, address),
    )
    return Suppression(**dict(row)) if row is not None else None


async def suppressions_for_addresses(db: Db, addresses: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """The suppression rows of these (channel, address) pairs, for a customer's export."""
    pairs = [(c, normalize_address(c, a)) for c, a in addresses if a]
    if not pairs:
        return []
    rows = await db.fetch(
        """SELECT channel, address, reason, source, created_at FROM suppressions
            WHERE (channel, address) IN (SELECT * FROM unnest($1::text[], $2::text[]))""",
        [c for c, _ in pairs],
        [a for _, a in pairs],
    )
    return [dict(r) for r in rows]
