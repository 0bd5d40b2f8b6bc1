"""SegmentEntryWorkflow: one run per firing of a journey's segment schedule.

It pages through the segment's members (an activity evaluates the segment in SQL), enters them in batches
(another activity claims each entry under the journey's re-entry policy, then starts the journey run),
and paces the batches with timers so that at most ``max_per_second`` customers enter per second. The whole run
uses one instant, the time it started, for the segment's event-history windows. Long segments continue as new
between pages, carrying the cursor and the counts.
"""

from __future__ import annotations

import math
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.segment_models import (
        SegmentEnterRequest,
        SegmentPage,
        SegmentPageRequest,
    )
    from activities.segments import SegmentActivities
    from contracts.segment import SEGMENT_WORKFLOW_NAME, SegmentRunInput, SegmentRunResult, schedule_id

PAGE_TIMEOUT = timedelta(minutes=2)
PAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1), maximum_attempts=10
)
ENTER_TIMEOUT = timedelta(minutes=5)
ENTER_HEARTBEAT = timedelta(seconds=30)
ENTER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1), maximum_attempts=10
)
# Pages per run before continuing as new, even if Temporal does not suggest it yet.
PAGES_PER_RUN = 100


@workflow.defn(name=SEGMENT_WORKFLOW_NAME)
class SegmentEntryWorkflow:
    @workflow.run
    async def run(self, input: SegmentRunInput) -> SegmentRunResult:
        run_key = input.run_key or _run_key(workflow.info().workflow_id, input.journey_id)
        started_at = input.started_at or workflow.now()
        state = input.model_copy(update={"run_key": run_key, "started_at": started_at})
        stopped: str | None = None
        for _ in range(PAGES_PER_RUN):
            page = await workflow.execute_activity_method(
                SegmentActivities.segment_members,
                SegmentPageRequest(journey_id=input.journey_id, after=state.after, now=started_at),
                start_to_close_timeout=PAGE_TIMEOUT,
                retry_policy=PAGE_RETRY,
                summary="find segment members",
            )
            if page.stopped or not page.customer_ids:
                stopped = page.stopped
                break
            state.members += len(page.customer_ids)
            stopped = await self._enter(state, page)
            state.after = page.customer_ids[-1]
            if stopped or len(page.customer_ids) < page.batch_size:
                break
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(state)
        else:
            workflow.continue_as_new(state)
        return SegmentRunResult(
            journey_id=input.journey_id,
            run_key=run_key,
            members=state.members,
            entered=state.entered,
            refused=state.refused,
            already_running=state.already_running,
            stopped=stopped,
        )

    async def _enter(self, state: SegmentRunInput, page: SegmentPage) -> str | None:
        """Enter the page's customers in chunks of at most ``max_per_second``, one chunk per its share of a second."""
        chunk = max(1, min(page.batch_size, math.floor(page.max_per_second)))
        ids = page.customer_ids
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            began = workflow.now()
            result = await workflow.execute_activity_method(
                SegmentActivities.enter_segment_batch,
                SegmentEnterRequest(
                    journey_id=state.journey_id, run_key=state.run_key or "", customer_ids=part, now=began
                ),
                start_to_close_timeout=ENTER_TIMEOUT,
                heartbeat_timeout=ENTER_HEARTBEAT,
                retry_policy=ENTER_RETRY,
                summary=f"enter {len(part)} customer(s)",
            )
            state.entered += len(result.entered)
            state.refused += len(result.refused)
            state.already_running += len(result.already_running)
            if result.stopped:
                return result.stopped
            # The next chunk may start once this one's share of time has passed.
            pause = timedelta(seconds=len(part) / page.max_per_second) - (workflow.now() - began)
            if pause > timedelta(0):
                await workflow.sleep(pause, summary="pacing entries")
        return None


def _run_key(workflow_id: str, journey_id: str) -> str:
    """A scheduled run's id is ``segment:{journey}-{scheduled time}``: keep the time; otherwise the whole id."""
    prefix = schedule_id(journey_id) + "-"
    return workflow_id.removeprefix(prefix) if workflow_id.startswith(prefix) else workflow_id
