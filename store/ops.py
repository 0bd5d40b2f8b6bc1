"""The operators' log: every action an operator took on journey runs (exit, reset), with who and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from store.db import Db


@dataclass(frozen=True)
class OpsAction:
    id: int
    action: str
    """``exit`` or ``reset``."""
    actor: str
    reason: str
    target: str
    """A workflow id, or the visibility query a batch acted on."""
    detail: dict[str, Any]
    created_at: datetime


async def record_action(db: Db, action: str, actor: str, reason: str, target: str, detail: dict[str, Any]) -> int:
    """Log one action; answers its id."""
    return int(
        await db.fetchval(
            "INSERT INTO ops_actions (action, actor, reason, target, detail) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            action,
            actor,
            reason,
            target,
            detail,
        )
    )


async def recent_actions(db: Db, *, limit: int = 50) -> list[OpsAction]:
    """The newest actions first."""
    rows = await db.fetch(
        "SELECT id, action, actor, reason, target, detail, created_at FROM ops_actions"
        " ORDER BY created_at DESC, id DESC LIMIT $1",
        limit,
    )
    return [OpsAction(**dict(r)) for r in rows]
