"""Push devices: the app installs a customer registered (``PUT /v1/customers/{id}/devices/{device_id}``).

A device is an FCM registration token, an APNs device token or a Web Push subscription (endpoint and keys). The
push channel sends to every active device of the customer; a provider answering that a token is dead
(``deactivate``) takes the device out at once, for every later push. Registering the device again (the app got a
new token) makes it active again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from store.db import Db

Platform = Literal["fcm", "apns", "web"]

_COLUMNS = (
    "customer_id, device_id, platform, token, subscription, app, locale, active, deactivated_at, "
    "deactivated_reason, created_at, updated_at"
)


@dataclass(frozen=True)
class Device:
    customer_id: str
    device_id: str
    platform: Platform
    token: str | None
    """FCM registration token or APNs device token (hex); None for Web Push."""
    subscription: dict[str, Any] | None
    """Web Push: ``{"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}``."""
    app: str | None
    locale: str | None
    active: bool
    deactivated_at: datetime | None
    deactivated_reason: str | None
    created_at: datetime
    updated_at: datetime


async def put_device(
    db: Db,
    customer_id: str,
    device_id: str,
    *,
    platform: Platform,
    token: str | None,
    subscription: dict[str, Any] | None,
    app: str | None,
    locale: str | None,
) -> tuple[Device, bool]:
    """Register or replace a device (active again); the row and whether it is new."""
    row = await db.fetchrow(
        f"""INSERT INTO devices (customer_id, device_id, platform, token, subscription, app, locale)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (customer_id, device_id) DO UPDATE SET
                platform = EXCLUDED.platform, token = EXCLUDED.token, subscription = EXCLUDED.subscription,
                app = EXCLUDED.app, locale = EXCLUDED.locale, active = true, deactivated_at = NULL,
                deactivated_reason = NULL, updated_at = now()
            RETURNING {_COLUMNS}, (xmax = 0) AS inserted""",
        customer_id,
        device_id,
        platform,
        token,
        subscription,
        app,
        locale,
    )
    assert row is not None  # INSERT ... RETURNING always returns the row
    values = dict(row)
    inserted = bool(values.pop("inserted"))
    return Device(**values), inserted


async def get_device(db: Db, customer_id: str, device_id: str) -> Device | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM devices WHERE customer_id = $1 AND device_id = $2", customer_id, device_id
    )
    return Device(**dict(row)) if row is not None else None


async def devices_of(db: Db, customer_id: str, *, active_only: bool = False) -> list[Device]:
    """The customer's devices, oldest registration first."""
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM devices WHERE customer_id = $1 AND (active OR NOT $2)
            ORDER BY created_at, device_id""",
        customer_id,
        active_only,
    )
    return [Device(**dict(r)) for r in rows]


async def delete_device(db: Db, customer_id: str, device_id: str) -> bool:
    status = await db.execute("DELETE FROM devices WHERE customer_id = $1 AND device_id = $2", customer_id, device_id)
    return bool(status == "DELETE 1")


async def deactivate(db: Db, customer_id: str, device_id: str, reason: str) -> bool:
    """Take a device out of every later push (a dead token); True when it was active."""
    status = await db.execute(
        """UPDATE devices SET active = false, deactivated_at = now(), deactivated_reason = $3, updated_at = now()
            WHERE customer_id = $1 AND device_id = $2 AND active""",
        customer_id,
        device_id,
        reason,
    )
    return bool(status == "UPDATE 1")


async def active_device_ids(db: Db, customer_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT device_id FROM devices WHERE customer_id = $1 AND active ORDER BY created_at, device_id", customer_id
    )
    return [r["device_id"] for r in rows]


async def active_device_ids_many(db: Db, customer_ids: Sequence[str]) -> dict[str, list[str]]:
    """``active_device_ids`` for many customers in one statement (a customer with none is absent)."""
    rows = await db.fetch(
        """SELECT customer_id, device_id FROM devices WHERE customer_id = ANY($1::text[]) AND active
            ORDER BY customer_id, created_at, device_id""",
        list(customer_ids),
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["customer_id"], []).append(r["device_id"])
    return out
