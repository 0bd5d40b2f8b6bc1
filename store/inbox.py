"""The in-app inbox: messages stored for the customer's app to read, one per send idempotency key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from store.db import Db

_INSERT_SQL = """
INSERT INTO inbox_messages (customer_id, idempotency_key, title, body, data)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""
_COLUMNS = "id, title, body, data, created_at, read_at"


@dataclass(frozen=True)
class InboxItem:
    """One message as the app sees it."""

    id: int
    title: str | None
    body: str
    data: dict[str, Any]
    created_at: datetime
    read_at: datetime | None


async def add_message(
    db: Db, customer_id: str, idempotency_key: str, *, title: str | None, body: str, data: dict[str, Any]
) -> int | None:
    """Store a message; its id, or None when the key was stored before (see ``stored_id``)."""
    inbox_id: int | None = await db.fetchval(_INSERT_SQL, customer_id, idempotency_key, title, body, data)
    return inbox_id


async def stored_id(db: Db, idempotency_key: str) -> int | None:
    """The id of the message stored under the key, or None."""
    inbox_id: int | None = await db.fetchval(
        "SELECT id FROM inbox_messages WHERE idempotency_key = $1", idempotency_key
    )
    return inbox_id


async def messages_of(db: Db, customer_id: str, *, unread: bool, limit: int) -> list[InboxItem]:
    """The customer's messages, newest first; ``unread``: only those not marked read."""
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM inbox_messages
            WHERE customer_id = $1 AND (NOT $2 OR read_at IS NULL)
            ORDER BY created_at DESC, id DESC LIMIT $3""",
        customer_id,
        unread,
        limit,
    )
    return [InboxItem(**dict(r)) for r in rows]


async def mark_read(db: Db, customer_id: str, message_id: int) -> InboxItem | None:
    """Mark the customer's message read (a second time keeps the first read time); None: no such message of
    that customer."""
    row = await db.fetchrow(
        f"""UPDATE inbox_messages SET read_at = COALESCE(read_at, now())
            WHERE id = $1 AND customer_id = $2
        RETURNING {_COLUMNS}""",
        message_id,
        customer_id,
    )
    return InboxItem(**dict(row)) if row is not None else None
