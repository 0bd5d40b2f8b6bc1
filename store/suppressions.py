"""Suppressed addresses: never message them again on that channel, whoever the customer is.

A hard bounce or a spam complaint (reported by a provider's webhook, or an SMTP 5xx naming a dead mailbox) puts
the address here. The send activity checks this table inside its transaction, for transactional messages too:
a dead mailbox is dead for receipts as well, and a complaint means the recipient asked us to stop.

Addresses are normalised (``normalize_address``) so a lookup finds them whatever their case.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import asyncpg

from store import customers as customer_store

SuppressionReason = Literal["hard_bounce", "complaint", "manual"]
SuppressedChannel = Literal["email", "sms"]

# The consent-ledger source recorded when a suppression withdraws a customer's channel consent.
CONSENT_SOURCE = {"hard_bounce": "bounce", "complaint": "complaint", "manual": "api"}


def normalize_address(channel: str, address: str) -> str:
    """Emails compare case-insensitively (in practice); phone numbers without spaces or punctuation but ``+``."""
    address = address.strip()
    if channel == "email":
        return address.lower()
    return "".join(c for c in address if c.isdigit() or c == "+")


async def suppression_for(db: Any, channel: str, address: str | None) -> str | None:
    """The reason ``address`` is suppressed on ``channel``, or None."""
    if not address or channel not in ("email", "sms"):
        return None
    reason: str | None = await db.fetchval(
        "SELECT reason FROM suppressions WHERE channel = $1 AND address = $2",
        channel,
        normalize_address(channel, address),
    )
    return reason


async def add_suppression(
    conn: Any,
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
    inserted = await conn.fetchval(
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
    pool: asyncpg.Pool,
    channel: SuppressedChannel,
    address: str,
    reason: SuppressionReason,
    *,
    source: str,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Suppress ``address`` and withdraw ``channel`` consent of every customer with that address, in one
    transaction. The consent change goes through ``record_consents`` (customer row lock, ledger source
    ``bounce``/``complaint``); a customer already withdrawn gets no second ledger row, so a report delivered
    twice (SNS is at-least-once) changes nothing the second time.

    Returns ``{"address", "new": bool, "customers_withdrawn": int}``.
    """
    normalized = normalize_address(channel, address)
    consent_source = CONSENT_SOURCE[reason]
    async with pool.acquire() as conn, conn.transaction():
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
    return {"address": normalized, "new": new, "customers_withdrawn": withdrawn}


async def suppressions_for_addresses(db: Any, addresses: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
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
