"""Broadcast runs seen from outside: start one (workflow id ``broadcast:{id}``), and pause, resume or cancel it.

The status is written to ``broadcasts`` first (the send batches read it between waves, so sending stops within a
batch), then the run is signalled. Starting twice is harmless: the id is taken while the run exists.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from contracts.broadcast import (
    BROADCAST_WORKFLOW_NAME,
    SIGNAL_CANCEL,
    SIGNAL_PAUSE,
    SIGNAL_RESUME,
    BroadcastInput,
    BroadcastResult,
    broadcast_workflow_id,
)
from journeys.broadcasts import Broadcast
from orchestration.errors import is_not_found
from store import broadcasts as broadcast_store
from store.db import Db

SIGNALS = {"pause": SIGNAL_PAUSE, "resume": SIGNAL_RESUME, "cancel": SIGNAL_CANCEL}
# What each action may change: to which status, from which.
TRANSITIONS = {
    "pause": ("paused", ("scheduled", "sending")),
    "resume": ("sending", ("paused",)),
    "cancel": ("cancelled", ("scheduled", "sending", "paused")),
}


async def start_broadcast(client: Client, broadcast: Broadcast, *, task_queue: str) -> WorkflowHandle[Any, Any] | None:
    """Start the broadcast's run: its handle, or None when it was started before."""
    try:
        return await client.start_workflow(
            BROADCAST_WORKFLOW_NAME,
            args=[BroadcastInput(broadcast_id=broadcast.id), broadcast],
            id=broadcast_workflow_id(broadcast.id),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"broadcast · {broadcast.display_name()}",
            result_type=BroadcastResult,
        )
    except WorkflowAlreadyStartedError:
        return None


async def control(db: Db, client: Client, broadcast_id: str, action: str) -> str | None:
    """Pause, resume or cancel: the status after the call (None: unknown broadcast). A status the action cannot
    leave (resuming a broadcast that is sending) is answered unchanged."""
    status, allowed = TRANSITIONS[action]
    now = await broadcast_store.set_status(db, broadcast_id, status, allowed_from=allowed)
    if now == status:
        handle = client.get_workflow_handle(broadcast_workflow_id(broadcast_id))
        try:
            await handle.signal(SIGNALS[action])
        except Exception as exc:
            if not is_not_found(exc):
                raise
            if action == "cancel":  # no run (any more): nobody else will settle the pending recipients
                await broadcast_store.cancel_pending(db, broadcast_id)
    return now
