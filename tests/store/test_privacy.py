"""store/privacy.py: a customer's broadcasts are in their export; erasure cancels their place in a broadcast still
sending and leaves only a pseudonym in its audience."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from journeys.broadcasts import Broadcast
from store import broadcasts as broadcast_store
from store import privacy
from tests.support.engine import make_customer, where_tag

SECRET = b"test-erasure-secret"


async def test_export_lists_the_customers_broadcasts_and_erasure_cancels_the_pending_ones(pool: asyncpg.Pool) -> None:
    tag = uuid.uuid4().hex
    customer = await make_customer(pool, attributes={"tag": tag})
    broadcast = Broadcast.model_validate(
        {
            "id": f"priv-{tag[:10]}",
            "name": "Winter sale",
            "segment": where_tag(tag),
            "channel": "email",
            "template": {"subject": "s", "text": "t"},
        }
    )
    await broadcast_store.create_broadcast(pool, broadcast)
    now = datetime.now(UTC)
    count = await broadcast_store.freeze_audience(
        pool,
        broadcast.id,
        broadcast.segment.inline(),
        now,
        send_at=None,
        local_send_at=None,
        default_timezone="UTC",
        holdout_percent=None,
    )
    assert count == 1

    exported = await privacy.export_customer(pool, customer)
    assert exported is not None
    [entry] = exported["broadcasts"]
    assert (entry["broadcast_id"], entry["broadcast_name"], entry["status"]) == (broadcast.id, "Winter sale", "pending")

    await privacy.erase_customer(pool, customer, SECRET, requested_at=now, complete=True)
    assert await privacy.export_customer(pool, customer) is None
    rows = await pool.fetch(
        "SELECT customer_id, status, reason FROM broadcast_recipients WHERE broadcast_id = $1", broadcast.id
    )
    assert [tuple(r) for r in rows] == [(privacy.pseudonym(SECRET, customer), "cancelled", "erased")]
    assert await broadcast_store.due_page(pool, broadcast.id, now, limit=10) == []
