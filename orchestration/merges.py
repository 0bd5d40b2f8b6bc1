"""Telling a merged profile's journey runs who they belong to now.

After ``identify`` merges a profile into a customer, each of the profile's running journeys carries on for the
customer (``IDENTIFY_SIGNAL``, and the customer adopts the run), or exits with reason ``merged`` when the customer
already runs that journey, so nobody is in one journey twice because of a merge. The merge log row records what
became of each run; the event router's drainer retries notifications that failed.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog

from contracts.journey import EXIT_SIGNAL, IDENTIFY_SIGNAL, ExitRequest, Identified, workflow_id
from orchestration.runs import JourneyRuns
from store import identity as identity_store
from store.db import Connection

log = structlog.get_logger(__name__)


async def notify_merge(
    pool: asyncpg.Pool, runs: JourneyRuns, merge: dict[str, Any], conn: Connection | None = None
) -> dict[str, Any]:
    """Tell the merge's pending runs, record what became of each (in ``conn`` if given), and answer the updated
    merge log row. Safe to repeat: a run told before is told again (the workflow ignores the repeat)."""
    target, merge_id = merge["customer_id"], merge["id"]
    told_runs: list[dict[str, Any]] = []
    for run in merge["runs"]:
        if run.get("status") != "pending":
            told_runs.append(run)
            continue
        journey_id, wid = run["journey_id"], run["workflow_id"]
        adopted = (await identity_store.adopted_runs(pool, [target])).get(target, {})
        others = [w for w in (adopted.get(journey_id), workflow_id(journey_id, target)) if w and w != wid]
        already = False
        for other in others:
            if await runs.is_running(other):
                already = True
                break
        if already:
            exited = await runs.signal(wid, EXIT_SIGNAL, ExitRequest(reason="merged"))
            status = "exited" if exited else "closed"
        else:
            told = Identified(customer_id=target, merge_id=merge_id, previous_customer_id=merge["merged_id"])
            status = "adopted" if await runs.signal(wid, IDENTIFY_SIGNAL, told) else "closed"
            if status == "adopted":
                await identity_store.adopt(pool, target, journey_id, wid, merge_id)
        told_runs.append({**run, "status": status})
        log.info("identity.run_told", merge_id=merge_id, workflow_id=wid, outcome=status)
    return await identity_store.finish_notification(conn or pool, merge_id, told_runs)
