"""Creating, starting and describing broadcasts, shared by the API and ``parcours broadcasts``."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError

from api.schemas import ApiError
from config.settings import Settings
from journeys.broadcasts import Broadcast
from orchestration.broadcasts import start_broadcast
from store import broadcasts as broadcast_store
from store import segments as segment_store
from store.db import Pool


async def create_and_start(pool: Pool, client: Client, settings: Settings, broadcast: Broadcast) -> dict[str, Any]:
    """Store the broadcast and start its run; 409 when the id is taken, 422 for an unknown saved segment."""
    if broadcast.segment.ref is not None and await segment_store.get_segment(pool, broadcast.segment.ref) is None:
        raise ApiError(422, f"unknown segment '{broadcast.segment.ref}'", field="segment.ref")
    row = await broadcast_store.create_broadcast(pool, broadcast)
    if row is None:
        raise ApiError(409, f"broadcast '{broadcast.id}' exists already", field="id")
    try:
        await start_broadcast(client, broadcast, task_queue=settings.task_queue)
    except RPCError as exc:
        # Nothing started: take the row back so the same request can simply be sent again.
        await broadcast_store.delete_unstarted(pool, broadcast.id)
        raise ApiError(503, f"Temporal is unavailable, retry later ({exc.message})", field=None) from None
    return await describe(pool, broadcast.id)


async def describe(pool: Pool, broadcast_id: str) -> dict[str, Any]:
    """Status, progress (recipients by status) and report (opens, clicks, conversions, holdout)."""
    row = await broadcast_store.get_broadcast(pool, broadcast_id)
    if row is None:
        raise ApiError(404, f"unknown broadcast '{broadcast_id}'", field="broadcast_id")
    progress = await broadcast_store.progress(pool, broadcast_id)
    report = await broadcast_store.report(pool, row)
    return {
        "id": row.id,
        "name": row.definition.get("name") or row.id,
        "status": row.status,
        "audience": row.audience,
        "created_at": row.created_at,
        "frozen_at": row.frozen_at,
        "finished_at": row.finished_at,
        "segment": row.segment,
        "progress": {
            "total": progress.total,
            "done": progress.done,
            "by_status": progress.counts,
            "next_due": progress.next_due,
        },
        "report": {
            "sent": report.sent,
            "opened": report.opened,
            "clicked": report.clicked,
            "clicks": report.clicks,
            "converted": report.converted,
            "holdout": report.holdout,
            "holdout_converted": report.holdout_converted,
            "by_channel": {name: dataclasses.asdict(part) for name, part in report.by_channel.items()},
        },
        "definition": row.definition,
    }


def when(value: datetime | None) -> str:
    return value.isoformat() if value else "-"
