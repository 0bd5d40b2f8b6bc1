"""The activities of a broadcast: freeze its audience, send a batch, finish.

A batch sends the due recipients' messages through ``JourneyActivities.send_batch``: the same row locks, send
policy (consent and topic, suppression, reachability, quiet hours, frequency caps) and idempotency key check as a
journey's send step; the key is one per broadcast and customer (``journeys.broadcasts.broadcast_message_key``), so
a retried batch or a resumed broadcast sends nobody twice. Recipients go in chunks of ``CHUNK``: one short
transaction per chunk locks its customers, reads their state in a few set-based statements, decides every
recipient and records the decisions (``pending`` message rows for the sends); the chunk then delivers outside any
transaction, over up to ``smtp_connections`` SMTP sessions at once (shared by the chunks in flight, reused across
chunks by the channel), and records the outcomes in a second short transaction. A couple of chunks are in flight
at once, so one decides or records while another delivers. While a batch sends, it looks at the broadcast's
status every ``STATUS_POLL_SECONDS``, so a pause or a cancel stops it within the batch (no new delivery begins),
leaving the rest pending, and heartbeats every ``HEARTBEAT_SECONDS`` from a task that waits on nothing else, with
every delivery not recorded yet. A batch of lane ``i`` of ``n`` sends to the customers of that lane in the page of
due recipients (the workflow runs the lanes' batches at once, on one worker or several).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.broadcast_models import BatchRequest, BatchResult, FinishRequest, FreezeRequest, FreezeResult
from activities.journey import JourneyActivities
from activities.models import SendRequest, SendResult
from config.settings import Settings
from contracts.broadcast import BroadcastCounts
from contracts.journey import Event
from journeys.broadcasts import (
    BROADCAST_STEP,
    Broadcast,
    LocalTime,
    broadcast_journey_id,
    broadcast_message_key,
)
from journeys.models import Audience
from store import broadcasts as broadcast_store
from store import segments as segment_store
from store.db import Pool

log = structlog.get_logger(__name__)

BROADCAST_TRIGGER = "$broadcast"


CHUNK = 100
"""Recipients sent in one transaction (``JourneyActivities.send_batch``): their reads and their message rows
cost a few statements for the chunk instead of seven per recipient."""
CHUNKS_IN_FLIGHT = 2
"""Chunks in flight at once: while one delivers, the other decides or records its outcomes (each transaction on its
own pooled connection, at most half the pool: ``database_pool_max // 2``)."""
STATUS_POLL_SECONDS = 0.1
"""How often a sending batch looks at the broadcast's status: a pause or a cancel stops it this soon after."""
STOPPING = ("paused", "cancelled")
HEARTBEAT_SECONDS = 1.0
"""A sending batch heartbeats this often whatever its chunks are doing (and after each chunk), from a task that
waits on nothing else: not on the database (the status watcher may wait for a pooled connection that sends stuck
on a slow SMTP server hold), not on a chunk's progress. The workflow's heartbeat timeout is 30 s; the worker sends
the newest heartbeat to the server at most every ``workers.worker.HEARTBEAT_THROTTLE``."""


def lane_of(customer_id: str, lanes: int) -> int:
    """The lane of a broadcast's batches that sends to this customer (the same in every process)."""
    return zlib.crc32(customer_id.encode()) % lanes


async def _keep_alive(beat: Callable[[], None]) -> None:
    while True:
        beat()
        await asyncio.sleep(HEARTBEAT_SECONDS)


def _inherited_deliveries() -> list[dict[str, Any]]:
    """What the attempt before this one delivered without recording it (its last heartbeat's ``delivered_batch``)."""
    if not activity.in_activity():
        return []
    return [
        one
        for detail in activity.info().heartbeat_details
        if isinstance(detail, dict) and isinstance(detail.get("delivered_batch"), list)
        for one in detail["delivered_batch"]
    ]


def for_customer(first: SendRequest, broadcast_id: str, customer_id: str) -> SendRequest:
    """``send_request`` for another customer of the same broadcast, from one built already (cheaper)."""
    return first.model_copy(
        update={
            "idempotency_key": broadcast_message_key(broadcast_id, customer_id),
            "customer_id": customer_id,
            "trigger": first.trigger.model_copy(update={"customer_id": customer_id}),
        }
    )


def send_request(broadcast: Broadcast, customer_id: str, now: datetime) -> SendRequest:
    """One customer's message of the broadcast, as the send activity takes a journey step's."""
    step = broadcast.send_step()
    content = step.all_content()
    candidates = step.candidates()
    return SendRequest(
        idempotency_key=broadcast_message_key(broadcast.id, customer_id),
        journey_id=broadcast_journey_id(broadcast.id),
        journey_name=broadcast.display_name(),
        journey_version=0,
        step_id=BROADCAST_STEP,
        customer_id=customer_id,
        entry_id=broadcast.id,
        channel=candidates[0],
        template=content[candidates[0]],
        topic=step.topic,
        kind=step.kind,
        trigger=Event(
            event_id=f"broadcast:{broadcast.id}",
            customer_id=customer_id,
            name=BROADCAST_TRIGGER,
            properties={"broadcast": broadcast.id},
            occurred_at=now,
        ),
        candidates=candidates,
        strategy=step.channels if isinstance(step.channels, str) else "list",
        content=content,
        quiet_hours=step.quiet_hours,
        when_capped=step.when_capped,
        now=now,
        track=step.track,
    )


async def resolve_audience(pool: Pool, broadcast: Broadcast) -> Audience:
    """The broadcast's segment as it is now: the saved segment's conditions for a ``ref``."""
    if broadcast.segment.ref is None:
        return broadcast.segment.inline()
    row = await segment_store.get_segment(pool, broadcast.segment.ref)
    if row is None:
        raise LookupError(f"unknown segment '{broadcast.segment.ref}'")
    return row.audience()


class BroadcastActivities:
    """Activities with their dependencies injected; the worker registers the bound methods."""

    def __init__(self, pool: Pool, sender: JourneyActivities, settings: Settings) -> None:
        self._pool = pool
        self._sender = sender
        self._settings = settings
        # Sends of one batch at a time, each holding a connection: leave the rest of the pool to other activities.
        self._concurrency = max(1, settings.database_pool_max // 2)

    def all(self) -> list[Any]:
        return [self.freeze_broadcast, self.send_broadcast_batch, self.finish_broadcast]

    async def _broadcast(self, broadcast_id: str) -> broadcast_store.BroadcastRow:
        row = await broadcast_store.get_broadcast(self._pool, broadcast_id)
        if row is None:
            raise LookupError(f"unknown broadcast '{broadcast_id}'")
        return row

    @activity.defn(name="freeze_broadcast")
    async def freeze_broadcast(self, request: FreezeRequest) -> FreezeResult:
        """Copy the segment's members into the broadcast's recipients, in one statement (once)."""
        row = await self._broadcast(request.broadcast_id)
        if row.status == "cancelled":
            return FreezeResult(audience=0, status=row.status)
        broadcast = row.broadcast()
        audience = await resolve_audience(self._pool, broadcast)
        send_at = broadcast.send_at
        count = await broadcast_store.freeze_audience(
            self._pool,
            broadcast.id,
            audience,
            request.now,
            send_at=send_at if isinstance(send_at, datetime) else None,
            local_send_at=send_at.local if isinstance(send_at, LocalTime) else None,
            default_timezone=self._settings.default_timezone,
            holdout_percent=broadcast.holdout.percent if broadcast.holdout else None,
        )
        status = await broadcast_store.broadcast_status(self._pool, broadcast.id) or "sending"
        log.info("broadcast.frozen", broadcast_id=broadcast.id, audience=count)
        return FreezeResult(audience=count, status=status)

    @activity.defn(name="send_broadcast_batch")
    async def send_broadcast_batch(self, request: BatchRequest) -> BatchResult:
        row = await self._broadcast(request.broadcast_id)
        if row.status in ("paused", "cancelled"):
            return BatchResult(stopped=row.status)  # type: ignore[arg-type]
        broadcast = row.broadcast()
        due = await broadcast_store.due_page(self._pool, broadcast.id, request.now, limit=request.limit)
        if not due:
            return BatchResult(next_due=await broadcast_store.next_due(self._pool, broadcast.id))
        if request.lanes > 1:
            # At most its share of the page: the lanes together send no more than ``limit`` (the rate limit's pace).
            share = request.limit // request.lanes + (1 if request.lane < request.limit % request.lanes else 0)
            due = [c for c in due if lane_of(c, request.lanes) == request.lane][:share]
            if not due:  # the page is the other lanes' this time: someone is due now
                return BatchResult(next_due=request.now)
        result = BatchResult()
        status: list[str | None] = [None]
        # Deliveries not recorded yet, per chunk in flight (``send_batch`` appends each as it completes), and those
        # an earlier attempt heartbeated (its chunks may come again in this one): every heartbeat carries them all,
        # so whichever heartbeat is the last one a retry sees, it records those sends instead of delivering again.
        in_flight: dict[int, list[dict[str, Any]]] = {}
        inherited = _inherited_deliveries()

        def beat() -> None:
            unrecorded = [*inherited, *(d for part in list(in_flight.values()) for d in part)]
            activity.heartbeat(
                {"broadcast_id": broadcast.id, "attempted": result.attempted, "delivered_batch": unrecorded}
            )

        watcher = asyncio.create_task(self._watch(broadcast.id, status))
        ticker = asyncio.create_task(_keep_alive(beat))
        try:
            first = send_request(broadcast, "", request.now)
            parts = [due[i : i + CHUNK] for i in range(0, len(due), CHUNK)]
            queue = list(reversed(parts))
            errors: list[BaseException] = []
            # Deliveries in flight at once across the batch's chunks: one SMTP session each (the channel keeps
            # ``smtp_pool_size`` idle ones for reuse across chunks and batches).
            deliveries = asyncio.Semaphore(self._settings.smtp_connections)

            async def sender() -> None:
                while queue and status[0] not in STOPPING and not errors:
                    part = queue.pop()
                    requests = [for_customer(first, broadcast.id, c) for c in part]
                    mine: list[dict[str, Any]] = []
                    in_flight[id(mine)] = mine
                    try:
                        answers = await self._sender.send_batch(
                            requests,
                            concurrency=deliveries,
                            stopped=lambda: status[0] in STOPPING,
                            delivered=mine,
                            heartbeat=beat,
                        )
                    except Exception as exc:  # a transaction failed: what it delivered stays in the heartbeats
                        errors.append(exc)
                        return
                    del in_flight[id(mine)]  # recorded
                    sent = [(c, a) for c, a in zip(part, answers, strict=True) if isinstance(a, SendResult)]
                    errors.extend(a for a in answers if isinstance(a, BaseException))
                    await broadcast_store.record_results(
                        self._pool, broadcast.id, [_settled(c, r, request.now) for c, r in sent], request.now
                    )
                    _count(result.counts, [r for _, r in sent])
                    result.attempted += len(sent)
                    beat()

            await asyncio.gather(*(sender() for _ in range(min(self._concurrency, CHUNKS_IN_FLIGHT, len(parts)))))
        finally:
            beat()  # the last word: what is still unrecorded
            ticker.cancel()
            watcher.cancel()
        if status[0] in STOPPING and result.attempted < len(due):
            result.stopped = status[0]  # type: ignore[assignment]
        if errors:
            # A transient failure (SMTP 4xx, the database): what was settled stays settled; Temporal retries the
            # batch, and the others' keys make those sends no-ops.
            raise _batch_failure(broadcast.id, errors)
        return result

    async def _watch(self, broadcast_id: str, status: list[str | None]) -> None:
        """Keep ``status[0]`` at the broadcast's status while a batch sends, so a pause or cancel stops it."""
        while True:
            await asyncio.sleep(STATUS_POLL_SECONDS)
            with contextlib.suppress(Exception):  # a missed look is made up for at the next
                status[0] = await broadcast_store.broadcast_status(self._pool, broadcast_id)

    @activity.defn(name="finish_broadcast")
    async def finish_broadcast(self, request: FinishRequest) -> str:
        if request.status == "cancelled":
            await broadcast_store.set_status(
                self._pool, request.broadcast_id, "cancelled", allowed_from=("scheduled", "sending", "paused")
            )
            await broadcast_store.cancel_pending(self._pool, request.broadcast_id)
            return "cancelled"
        final = await broadcast_store.set_status(
            self._pool, request.broadcast_id, "completed", allowed_from=("scheduled", "sending", "paused")
        )
        return final or "completed"


def _batch_failure(broadcast_id: str, errors: list[BaseException]) -> ApplicationError:
    """What the broadcast run's history records about a failed batch: the number and kinds of errors, never their
    text. A send error names its recipient (an SMTP refusal quotes the address, a webhook error its URL, which
    customer data may fill), and the run's history is one no customer's erasure deletes. The errors themselves go
    to the log, which redacts recipients."""
    kinds = sorted({type(error).__name__ for error in errors})
    for error in errors:
        log.warning("broadcast.batch_send_failed", broadcast_id=broadcast_id, error=repr(error))
    return ApplicationError(
        f"{len(errors)} send(s) of the batch failed ({', '.join(kinds)}); the batch is retried",
        type=kinds[0],
    )


def _settled(customer_id: str, result: SendResult, now: datetime) -> broadcast_store.RecipientResult:
    if result.status == "deferred":
        wait = timedelta(seconds=result.retry_after_seconds or 60)
        return broadcast_store.RecipientResult(customer_id, "pending", result.reason, result.channel, now + wait)
    return broadcast_store.RecipientResult(customer_id, result.status, result.reason, result.channel)


def _count(counts: BroadcastCounts, results: list[SendResult]) -> None:
    for r in results:
        if r.status == "sent":
            counts.sent += 1
        elif r.status == "skipped":
            counts.skipped += 1
        elif r.status == "failed":
            counts.failed += 1
        else:
            counts.deferred += 1
