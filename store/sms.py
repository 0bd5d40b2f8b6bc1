"""SMS consent by phone number: what an inbound keyword (STOP, START) or a provider's opt-out code changes.

The number is compared normalised (digits and ``+``), as suppressions compare it. Every customer with that number
is changed, each under its row lock (``customers.record_consent``), in id order.
"""

from __future__ import annotations

from store import customers as customer_store
from store.db import Db, transaction
from store.suppressions import normalize_address


async def customers_with_phone(db: Db, phone: str) -> list[str]:
    rows = await db.fetch(
        "SELECT id FROM customers WHERE regexp_replace(phone, '[^0-9+]', '', 'g') = $1 ORDER BY id",
        normalize_address("sms", phone),
    )
    return [r["id"] for r in rows]


async def set_sms_consent(db: Db, phone: str, status: customer_store.ConsentStatus, *, source: str) -> list[str]:
    """Grant or withdraw SMS consent of every customer with ``phone``; the customers whose consent changed (one
    already in that state gets no second ledger row, so a keyword delivered twice changes nothing)."""
    changed: list[str] = []
    async with transaction(db) as conn:
        for customer_id in await customers_with_phone(conn, phone):
            current = await conn.fetchval(
                "SELECT status FROM consent_current WHERE customer_id = $1 AND scope = 'channel' AND name = 'sms'",
                customer_id,
            )
            if current == status:
                continue
            try:
                await customer_store.record_consent(conn, customer_id, "channel", "sms", status, source=source)
            except customer_store.UnknownCustomerError:
                continue  # erased meanwhile
            changed.append(customer_id)
    return changed


async def first_seen(db: Db, signature: str, keep_seconds: float) -> bool:
    """Record a signed inbound request by its signature; False when it was seen already (a replay). Rows older
    than ``keep_seconds`` (past the timestamp tolerance, so no longer replayable) are deleted first."""
    async with transaction(db) as conn:
        await conn.execute(
            "DELETE FROM sms_inbound_seen WHERE seen_at < now() - make_interval(secs => $1)", float(keep_seconds)
        )
        inserted = await conn.fetchval(
            "INSERT INTO sms_inbound_seen (signature) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true", signature
        )
    return inserted is not None
