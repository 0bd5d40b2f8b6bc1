"""BroadcastWorkflow: one run per broadcast, however large its audience.

It freezes the audience (one SQL statement copies the segment's members into ``broadcast_recipients``), then
sends in batches: each batch is one activity that takes the recipients due now and sends their messages through
the journeys' send code, a few at a time, heartbeating its progress; ``LANES`` batches run at once, each with the
customers of its lane in the page of due recipients, so that several workers share a broadcast. Between batches
the run paces itself to the broadcast's ``rate_limit`` with timers, sleeps until the next recipient is due (a local
send time reaches each zone at its own hour; quiet hours defer a customer), and continues as new every
``BATCHES_PER_RUN`` batches so its history stays short. ``pause``, ``resume`` and ``cancel`` are signals; the API
also writes the status to the database first, which the batch reads between waves, so a pause or cancel stops
sending within a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.broadcast_models import BatchRequest, BatchResult, FinishRequest, FreezeRequest
    from activities.broadcasts import BroadcastActivities
    from contracts.broadcast import (
        BROADCAST_WORKFLOW_NAME,
        QUERY_PROGRESS,
        SIGNAL_CANCEL,
        SIGNAL_PAUSE,
        SIGNAL_RESUME,
        BroadcastInput,
        BroadcastResult,
    )
    from journeys.broadcasts import Broadcast

FREEZE_TIMEOUT = timedelta(minutes=10)
BATCH_TIMEOUT = timedelta(minutes=10)
BATCH_HEARTBEAT = timedelta(seconds=30)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
BATCHES_PER_RUN = 200
PARALLEL_BATCHES = "broadcast-parallel-batches"
"""``workflow.patched()`` id: each round sends LANES batches at once instead of one."""
LANES = 2
"""Batches of one broadcast in flight at once, each on whichever worker takes it: one batch is one activity, so
with a single lane a broadcast never used more than one worker process (one core), however many there were."""


def merged(lanes: list[BatchResult]) -> BatchResult:
    """One round's result from its lanes' batches."""
    result = BatchResult(attempted=sum(r.attempted for r in lanes))
    for name in ("sent", "skipped", "failed", "deferred"):
        setattr(result.counts, name, sum(getattr(r.counts, name) for r in lanes))
    stops = {r.stopped for r in lanes}
    result.stopped = "cancelled" if "cancelled" in stops else "paused" if "paused" in stops else None
    dues = [r.next_due for r in lanes if r.next_due is not None]
    result.next_due = min(dues) if dues else None
    return result


@workflow.defn(name=BROADCAST_WORKFLOW_NAME)
class BroadcastWorkflow:
    def __init__(self) -> None:
        self._state = BroadcastInput(broadcast_id="")

    @workflow.signal(name=SIGNAL_PAUSE)
    def pause(self) -> None:
        self._state.paused = True

    @workflow.signal(name=SIGNAL_RESUME)
    def resume(self) -> None:
        self._state.paused = False

    @workflow.signal(name=SIGNAL_CANCEL)
    def cancel(self) -> None:
        self._state.cancelled = True

    @workflow.query(name=QUERY_PROGRESS)
    def progress(self) -> BroadcastInput:
        return self._state

    @workflow.run
    async def run(self, input: BroadcastInput, broadcast: Broadcast) -> BroadcastResult:
        state = self._state = input.model_copy(
            update={"paused": input.paused or self._state.paused, "cancelled": input.cancelled or self._state.cancelled}
        )
        if state.audience is None and not state.cancelled:
            frozen = await workflow.execute_activity_method(
                BroadcastActivities.freeze_broadcast,
                FreezeRequest(broadcast_id=state.broadcast_id, now=workflow.now()),
                start_to_close_timeout=FREEZE_TIMEOUT,
                retry_policy=RETRY,
                summary="freeze the audience",
            )
            state.audience = frozen.audience
            state.cancelled = state.cancelled or frozen.status == "cancelled"
            state.paused = state.paused or frozen.status == "paused"
        limit = broadcast.batch_size
        if broadcast.rate_limit is not None:
            limit = max(1, min(limit, int(broadcast.rate_limit)))
        batches = 0
        while not state.cancelled:
            if state.paused:
                await workflow.wait_condition(lambda: not state.paused or state.cancelled)
                continue
            began = workflow.now()
            if workflow.patched(PARALLEL_BATCHES):
                # The page of ``limit`` due recipients is shared out between LANES batches at once (each takes
                # the customers of its lane), so several workers send one broadcast.
                n = min(LANES, limit)  # a rate limit of 1 a second is one lane of 1
                lanes = await asyncio.gather(
                    *(
                        workflow.execute_activity_method(
                            BroadcastActivities.send_broadcast_batch,
                            BatchRequest(broadcast_id=state.broadcast_id, now=began, limit=limit, lane=i, lanes=n),
                            start_to_close_timeout=BATCH_TIMEOUT,
                            heartbeat_timeout=BATCH_HEARTBEAT,
                            retry_policy=RETRY,
                            summary=f"send a batch (lane {i + 1} of {n})",
                        )
                        for i in range(n)
                    )
                )
                result = merged(lanes)
            else:
                result = await workflow.execute_activity_method(
                    BroadcastActivities.send_broadcast_batch,
                    BatchRequest(broadcast_id=state.broadcast_id, now=began, limit=limit),
                    start_to_close_timeout=BATCH_TIMEOUT,
                    heartbeat_timeout=BATCH_HEARTBEAT,
                    retry_policy=RETRY,
                    summary="send a batch",
                )
            for name in ("sent", "skipped", "failed", "deferred"):
                setattr(state.counts, name, getattr(state.counts, name) + getattr(result.counts, name))
            if result.stopped == "cancelled":
                state.cancelled = True
                break
            if result.stopped == "paused":
                state.paused = True
                continue
            if result.attempted == 0:
                if result.next_due is None:
                    break
                # Nobody due now: sleep until the next one is (a signal wakes the run earlier).
                wait = max(result.next_due - workflow.now(), timedelta(seconds=1))
                with contextlib.suppress(asyncio.TimeoutError):
                    await workflow.wait_condition(lambda: state.paused or state.cancelled, timeout=wait)
                continue
            if broadcast.rate_limit is not None:
                pause = timedelta(seconds=result.attempted / broadcast.rate_limit) - (workflow.now() - began)
                if pause > timedelta(0):
                    await workflow.sleep(pause, summary="rate limit")
            batches += 1
            state.batches += 1
            if batches >= BATCHES_PER_RUN or workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(args=[state, broadcast])
        status = "cancelled" if state.cancelled else "completed"
        await workflow.execute_activity_method(
            BroadcastActivities.finish_broadcast,
            FinishRequest(broadcast_id=state.broadcast_id, status=status),
            start_to_close_timeout=FREEZE_TIMEOUT,
            retry_policy=RETRY,
            summary=status,
        )
        return BroadcastResult(
            broadcast_id=state.broadcast_id, status=status, audience=state.audience or 0, counts=state.counts
        )
