"""JourneyWorkflow: one durable run per customer per journey entry, interpreting its pinned journey version.

The workflow owns time and order: it waits on timers, reacts to behaviour events (signals), decides where the
customer goes next. Everything that touches the outside world (profile, consent, providers, analytics) happens
in activities. The interpreter is deterministic: it reads only its input, signals, activity results and
``workflow.now()``.

Each step type has one handler method, registered with ``@_handles`` in the ``_STEP_TYPES`` table together with
what the Temporal UI shows while it runs; a step model without a handler fails at import. Activities are called
by reference to their methods (the names Temporal records come from their ``activity.defn``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar, get_args

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.journey import JourneyActivities
    from activities.models import (
        ConversionRecord,
        Handoff,
        HistoryRequest,
        MomentRequest,
        OutcomeRecord,
        Profile,
        ProfileRequest,
        ProfileUpdate,
        SendFailure,
        SendRequest,
        SendResult,
        StepContext,
        WebhookAnswer,
        WebhookCall,
    )
    from activities.steps import StepActivities
    from contracts import search_attributes as sa
    from contracts.journey import (
        EVENT_SIGNAL,
        EXIT_SIGNAL,
        IDENTIFY_SIGNAL,
        STATE_QUERY,
        WORKFLOW_NAME,
        Event,
        ExitRequest,
        Identified,
        JourneyInput,
        JourneyProgress,
        JourneyResult,
        JourneyState,
        JourneyStatus,
        StepRecord,
        WaitInProgress,
    )
    from journeys.conditions import lookup
    from journeys.models import (
        END,
        AnyStep,
        BranchStep,
        ExitCriterion,
        ExitStep,
        Journey,
        SendStep,
        SplitStep,
        StartJourneyStep,
        UpdateProfileStep,
        WaitForStep,
        WaitStep,
        WaitUntilStep,
        WebhookStep,
    )
    from workflows.bucketing import bucket

# Activity options, one place to tune them. Reads are local activities (no extra server round trip); the send
# is a regular activity so Temporal tracks and retries it on any worker.
PROFILE_TIMEOUT = timedelta(seconds=10)
PROFILE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=20)
SEND_TIMEOUT = timedelta(seconds=60)
# A worker that dies mid-send stops heartbeating: retry elsewhere after this, not after SEND_TIMEOUT. It must stay
# above a provider's timeout (10 s) plus a wait for the customer's row lock.
SEND_HEARTBEAT = timedelta(seconds=30)
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=12,
    non_retryable_error_types=["InvalidSendRequest"],
)
WEBHOOK_TIMEOUT = timedelta(seconds=30)
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1), maximum_attempts=6
)
HANDOFF_TIMEOUT = timedelta(seconds=30)
HANDOFF_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5), maximum_attempts=20
)
RECORD_TIMEOUT = timedelta(seconds=10)
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=50)

# Patches: behaviour changes that running journeys must not see (replayed histories take the old path).
SEND_RECORDS_OUTCOME = "send-records-its-outcome"
"""The send activity records the step's outcome in its own transaction instead of a separate local activity."""
CONVERSION_RECORDS_LAST_STEP = "conversion-records-last-step"
"""The outcome of the step the goal cut short is recorded with the conversion, in one local activity."""
FAILURES_VISIBLE = "failures-visible"
"""A failed step sets the ``ParcoursHealth`` and ``ParcoursFailedStep`` search attributes."""
ASSIGNMENTS_KEPT = "assignments-kept"
"""Every split step's variant is kept in the progress and recorded with the conversion (not only the last)."""
WAITS_CONTINUE_AS_NEW = "waits-continue-as-new"
"""A wait wakes when Temporal suggests continue-as-new or many events came, and the next run resumes the wait."""

# How long a held-out (control group) customer is watched for the goal when the journey names no window.
DEFAULT_HOLDOUT_OBSERVATION = timedelta(days=30)

# How much history the run keeps in memory and carries across continue-as-new.
MAX_EVENTS_KEPT = 500
MAX_STEPS_KEPT = 200
MAX_SEEN_IDS_KEPT = 5000
# A waiting run continues as new after this many events (Temporal refuses signals past 10,000 a run, and each
# signal adds history), unless Temporal suggested it earlier. ``JourneyInput.continue_after_signals`` overrides it.
CONTINUE_AFTER_SIGNALS = 1000


@dataclass(frozen=True)
class _Done:
    """What a step did: its outcome, the step the customer goes to next, and details for its record."""

    outcome: str
    next_id: str
    detail: dict[str, Any] = field(default_factory=dict)
    persist: bool = True
    """False when the step's activity already stored its outcome (a send since SEND_RECORDS_OUTCOME)."""


_StepT = TypeVar("_StepT", bound=AnyStep)
_Handler = Callable[["JourneyWorkflow", _StepT, int, datetime], Awaitable[_Done]]
"""Runs one visit of a step (the step, the visit number, when it started) and says what it did."""


class _StepType(NamedTuple):
    run: _Handler[Any]
    describe: Callable[[Any], str]
    """What the step does, for the Temporal UI's current details (the step's id and label go around it)."""


_STEP_TYPES: dict[type[Any], _StepType] = {}
"""The interpreter's dispatch table: a step model's class to its handler and its description."""


def _handles(model: type[_StepT], describe: Callable[[_StepT], str]) -> Callable[[_Handler[_StepT]], _Handler[_StepT]]:
    """Register the decorated method as the handler of ``model`` steps, shown in the UI as ``describe(step)``."""

    def register(run: _Handler[_StepT]) -> _Handler[_StepT]:
        _STEP_TYPES[model] = _StepType(run, describe)
        return run

    return register


@workflow.defn(name=WORKFLOW_NAME)
class JourneyWorkflow:
    @workflow.init
    def __init__(self, input: JourneyInput) -> None:
        self._input = input
        self._journey: Journey = input.definition
        self._progress = input.progress or JourneyProgress(
            current_step=self._journey.first_step(),
            events=[input.trigger],
            seen_event_ids=[input.trigger.event_id],
        )
        if self._progress.entered_at is None:
            self._progress.entered_at = workflow.now()
        self._seen = set(self._progress.seen_event_ids)
        self._status: JourneyStatus = "running"
        self._exit_reason: str | None = None
        self._goal_event: Event | None = None
        self._exit_event: tuple[Event, ExitCriterion] | None = None
        self._exit_request: str | None = None
        self._current: str | None = self._progress.current_step
        # Step outcomes kept back to be recorded with the next record (the conversion), never across a task.
        self._unrecorded: list[StepRecord] = []
        # The last step that failed and why, kept in the current details once the run has moved on.
        self._failure: str | None = None
        # Events received by this run (duplicates too: each one is history), and the step being run.
        self._signals = 0
        self._step: tuple[str, int, datetime] | None = None

    # --- signals and queries -------------------------------------------------------------------------------

    @workflow.signal(name=EVENT_SIGNAL)
    def on_event(self, event: Event) -> None:
        """A behaviour event for this customer. An event id seen before has no effect."""
        self._signals += 1
        if event.event_id in self._seen:
            return
        self._seen.add(event.event_id)
        self._progress.seen_event_ids.append(event.event_id)
        self._progress.events.append(event)
        if self._status != "running" or self._goal_event is not None or self._exit_event is not None:
            return
        if self._is_goal(event):
            self._goal_event = event
            return
        for criterion in self._journey.exit_when:
            if criterion.event == event.name and (
                criterion.where is None or criterion.where.evaluate(event.properties)
            ):
                self._exit_event = (event, criterion)
                return

    @workflow.signal(name=EXIT_SIGNAL)
    def on_exit(self, request: ExitRequest) -> None:
        """End the journey at once (archiving, erasure, an operator), recording the reason."""
        if self._exit_request is None:
            self._exit_request = request.reason

    @workflow.signal(name=IDENTIFY_SIGNAL)
    def on_identified(self, identified: Identified) -> None:
        """The visitor this run started for was identified: carry on for that customer from the next activity.

        Profile reads, sends (address, channels, consent, caps), history checks and records use the customer's id
        from now on. Message idempotency keys and split buckets keep the id the run started with, so a step is
        never sent twice and a variant never changes.
        """
        if identified.customer_id == self._customer:
            return
        self._progress.customer_id = identified.customer_id
        workflow.upsert_search_attributes([sa.CUSTOMER_ID.value_set(identified.customer_id)])
        if self._status == "running":
            was = identified.previous_customer_id
            self._show(self._current, f"identified as `{identified.customer_id}` (was `{was}`)")

    @property
    def _customer(self) -> str:
        """Whom the run is for now: the customer it was identified as, else the one it started for."""
        return self._progress.customer_id or self._input.customer_id

    @workflow.query(name=STATE_QUERY)
    def state(self) -> JourneyState:
        return JourneyState(
            journey_id=self._input.journey_id,
            journey_version=self._input.journey_version,
            customer_id=self._customer,
            entered_as=self._input.customer_id if self._customer != self._input.customer_id else None,
            entry_id=self._input.entry_id,
            status=self._status,
            current_step=self._current,
            steps_done=self._progress.steps_done,
            steps_done_total=self._progress.steps_done_total,
            events_seen=self._progress.events,
            exit_reason=self._exit_reason,
            variant=self._progress.variant,
        )

    # --- the interpreter -----------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: JourneyInput) -> JourneyResult:
        try:
            return await self._run(input)
        except asyncio.CancelledError:
            # Cancelled from outside (an operator): record why the customer left, then end as cancelled.
            if self._status == "running":
                await self._exit(self._exit_request or "cancelled", {})
                self._show(None, f"exited: {self._exit_reason}")
            raise

    async def _run(self, input: JourneyInput) -> JourneyResult:
        workflow.upsert_search_attributes(
            [
                sa.JOURNEY_ID.value_set(input.journey_id),
                sa.CUSTOMER_ID.value_set(self._customer),
                sa.JOURNEY_VERSION.value_set(input.journey_version),
            ]
        )
        resumes_holdout = input.progress is not None and getattr(input.progress.waiting, "step_id", None) == "$holdout"
        if (input.progress is None or resumes_holdout) and self._journey.holdout and self._held_out():
            return await self._hold_out()
        step_id = self._progress.current_step
        while step_id != END and self._goal_event is None:
            if await self._should_exit():
                return self._finish()
            if workflow.info().is_continue_as_new_suggested():
                await self._continue_as_new(step_id)
            step_id = await self._run_step(step_id)
            if self._status == "exited":
                return self._finish()
        # An exit that cut the last step's wait short still counts as an exit, not as reaching the end.
        if self._goal_event is None and (self._exit_request is not None or self._exit_event is not None):
            await self._should_exit()
            return self._finish()
        if self._goal_event is not None:
            await self._convert(self._goal_event)
        else:
            self._status = "completed"
            self._show(None, "completed")
        return self._finish()

    async def _run_step(self, step_id: str) -> str:
        step = self._journey.step(step_id)
        kind = _STEP_TYPES[type(step)]
        self._progress.current_step = step_id
        self._current = step_id
        resumed = self._progress.waiting
        if resumed is not None and resumed.step_id == step_id:
            # The previous run continued as new in this step's wait: same visit, same start, the wait resumes.
            visit, started = resumed.visit, resumed.started_at
        else:
            self._progress.waiting = None
            visit = self._progress.visits.get(step_id, 0) + 1
            self._progress.visits[step_id] = visit
            self._progress.step_started_event_index = len(self._progress.events)
            started = workflow.now()
        self._step = (step_id, visit, started)
        self._show(step_id, f"step `{step.id}`: {kind.describe(step)} ({step.label or step.id})")
        done = await kind.run(self, step, visit, started)
        if done.outcome == "failed":
            self._failed(step_id, done.detail)
        # The goal ended the journey during this step: the conversion, recorded next, takes its outcome along.
        defer = (
            done.persist
            and self._goal_event is not None
            and self._status == "running"
            and workflow.patched(CONVERSION_RECORDS_LAST_STEP)
        )
        await self._record(
            StepRecord(
                step_id=step_id,
                type=step.type,
                visit=visit,
                outcome=done.outcome,
                detail={k: v for k, v in done.detail.items() if v is not None},
                started_at=started,
                finished_at=workflow.now(),
            ),
            persist=done.persist,
            defer=defer,
        )
        return done.next_id

    # --- the step types: one handler each, with what the Temporal UI shows while it runs ----------------------

    @_handles(SendStep, lambda step: f"sending {step.channel}")
    async def _do_send(self, step: SendStep, visit: int, started: datetime) -> _Done:
        result = await self._send(step, visit, started)
        return _Done(
            result.status,
            self._journey.resolve(step.id, "next"),
            {"channel": result.channel, "reason": result.reason, "message_key": result.idempotency_key},
            persist=not result.outcome_recorded,
        )

    @_handles(WaitStep, lambda step: f"waiting {_until(step.duration)}")
    async def _do_wait(self, step: WaitStep, visit: int, started: datetime) -> _Done:
        await self._wait(lambda: False, step.duration)
        return _Done(self._why_interrupted() or "waited", self._journey.resolve(step.id, "next"))

    @_handles(WaitForStep, lambda step: f"waiting up to {_until(step.timeout)} for `{step.event}`")
    async def _do_wait_for(self, step: WaitForStep, visit: int, started: datetime) -> _Done:
        found: list[Event] = []

        def happened() -> bool:
            match = self._find_event(step)
            if match is not None:
                found.append(match)
            return match is not None

        await self._wait(happened, step.timeout)
        if found:
            return _Done("event", self._journey.resolve(step.id, "on_event"), {"event_id": found[0].event_id})
        return _Done(self._why_interrupted() or "timeout", self._journey.resolve(step.id, "on_timeout"))

    @_handles(WaitUntilStep, lambda step: "waiting for a moment on the customer's calendar")
    async def _do_wait_until(self, step: WaitUntilStep, visit: int, started: datetime) -> _Done:
        until = await self._moment(step)
        if until is None:
            return _Done("no_date", self._journey.resolve(step.id, "on_missing"))
        if until <= workflow.now():
            return _Done("past", self._journey.resolve(step.id, "on_past" if step.on_past else "next"))
        await self._wait(lambda: False, until - workflow.now())
        outcome = self._why_interrupted() or "waited"
        return _Done(outcome, self._journey.resolve(step.id, "next"), {"until": until.isoformat()})

    @_handles(SplitStep, lambda step: "A/B split")
    async def _do_split(self, step: SplitStep, visit: int, started: datetime) -> _Done:
        variant = self._split(step)
        self._progress.variant = variant
        if workflow.patched(ASSIGNMENTS_KEPT):
            self._progress.variants.setdefault(step.id, variant)
        workflow.upsert_search_attributes([sa.VARIANT.value_set(variant)])
        return _Done(variant, self._journey.resolve(step.id, f"variants.{variant}"), {"variant": variant})

    @_handles(BranchStep, lambda step: "branching")
    async def _do_branch(self, step: BranchStep, visit: int, started: datetime) -> _Done:
        taken = await self._branch(step)
        return _Done(taken, self._journey.resolve(step.id, taken))

    @_handles(UpdateProfileStep, lambda step: "updating the profile")
    async def _do_update_profile(self, step: UpdateProfileStep, visit: int, started: datetime) -> _Done:
        next_id = self._journey.resolve(step.id, "next")
        try:
            update = await workflow.execute_local_activity_method(
                StepActivities.update_profile,
                ProfileUpdate(context=self._context(step.id, visit), set=step.set),
                start_to_close_timeout=RECORD_TIMEOUT,
                retry_policy=RECORD_RETRY,
            )
        except ActivityError as err:  # e.g. a value that does not render for this customer
            return _Done("failed", next_id, {"error": str(err.cause or err)[:500]})
        return _Done("updated" if update.updated else "unknown_customer", next_id, {"set": update.attributes})

    @_handles(WebhookStep, lambda step: f"calling {step.url}")
    async def _do_webhook(self, step: WebhookStep, visit: int, started: datetime) -> _Done:
        answer = await self._call_webhook(step, visit)
        self._progress.responses[step.save_as or step.id] = answer.model_dump(exclude={"ok"})
        return _Done(
            "ok" if answer.ok else "failed",
            self._journey.resolve(step.id, "next" if answer.ok or not step.on_failure else "on_failure"),
            {"status": answer.status, "error": answer.error},
        )

    @_handles(StartJourneyStep, lambda step: f"handing over to journey `{step.journey}`")
    async def _do_start_journey(self, step: StartJourneyStep, visit: int, started: datetime) -> _Done:
        handed = await workflow.execute_activity_method(
            StepActivities.start_journey,
            Handoff(context=self._context(step.id, visit), target_journey=step.journey, now=workflow.now()),
            start_to_close_timeout=HANDOFF_TIMEOUT,
            retry_policy=HANDOFF_RETRY,
            summary=f"hand over to {step.journey}",
        )
        return _Done(
            handed.outcome, self._journey.resolve(step.id, "next"), {"journey": step.journey, "reason": handed.reason}
        )

    @_handles(ExitStep, lambda step: "exit")
    async def _do_exit(self, step: ExitStep, visit: int, started: datetime) -> _Done:
        self._status, self._exit_reason = "exited", step.reason
        return _Done("exit", END, {"reason": step.reason})

    async def _wait(self, done: Any, limit: timedelta) -> bool:
        """Wait until ``done()``, the goal or an exit event, at most ``limit``; True when the goal or exit came.

        Since WAITS_CONTINUE_AS_NEW a wait that receives many events continues as new, carrying what is left of it;
        the next run's first wait (in the same step) waits only for that.
        """
        waiting, self._progress.waiting = self._progress.waiting, None
        timeout = limit if waiting is None else waiting.until - workflow.now()
        until = workflow.now() + timeout
        if timeout <= timedelta(0):
            return self._interrupted()
        moves = workflow.patched(WAITS_CONTINUE_AS_NEW)
        bound = self._input.continue_after_signals or CONTINUE_AFTER_SIGNALS

        def should_move() -> bool:
            return moves and (self._signals >= bound or workflow.info().is_continue_as_new_suggested())

        try:
            await workflow.wait_condition(lambda: self._interrupted() or done() or should_move(), timeout=timeout)
        except TimeoutError:
            return self._interrupted()
        if not (self._interrupted() or done()) and self._step is not None:
            step_id, visit, started = self._step
            if step_id != "$holdout":
                self._show(step_id, f"step `{step_id}`: continuing as new while waiting ({self._signals} events)")
            await self._continue_as_new(
                step_id, WaitInProgress(step_id=step_id, visit=visit, started_at=started, until=until)
            )
        return self._interrupted()

    def _why_interrupted(self) -> str | None:
        """What cut a wait short: ``goal`` or ``exit`` (None: nothing did)."""
        if self._goal_event is not None:
            return "goal"
        if self._exit_event is not None or self._exit_request is not None:
            return "exit"
        return None

    def _interrupted(self) -> bool:
        return self._goal_event is not None or self._exit_event is not None or self._exit_request is not None

    async def _should_exit(self) -> bool:
        """Exit criteria, checked before every step: an exit request or event received, a profile condition met."""
        if self._exit_request is not None:
            return await self._exit(self._exit_request, {})
        if self._exit_event is not None:
            event, criterion = self._exit_event
            return await self._exit(criterion.describe(), {"event_id": event.event_id})
        profile_criteria = [c for c in self._journey.exit_when if c.event is None and c.where is not None]
        if profile_criteria:
            data = {"profile": (await self._load_profile()).as_condition_data()}
            for criterion in profile_criteria:
                if criterion.where is not None and criterion.where.evaluate(data):
                    return await self._exit(criterion.describe(), {})
        return False

    async def _exit(self, reason: str, detail: dict[str, Any]) -> bool:
        self._status, self._exit_reason = "exited", reason
        now = workflow.now()
        await self._record(
            StepRecord(
                step_id="$exit",
                type="exit",
                outcome="exit",
                detail={"reason": reason, **detail},
                started_at=now,
                finished_at=now,
            )
        )
        return True

    def _held_out(self) -> bool:
        holdout = self._journey.holdout
        return holdout is not None and bucket(self._input.journey_id, self._input.customer_id, "holdout") < (
            holdout.percent / 100
        )

    async def _hold_out(self) -> JourneyResult:
        """The control group: counted, watched for the goal, never messaged."""
        self._progress.variant = "holdout"
        workflow.upsert_search_attributes([sa.VARIANT.value_set("holdout")])
        holdout, goal = self._journey.holdout, self._journey.goal
        watch = (holdout.observe_for if holdout else None) or (goal.within if goal else None)
        watch = watch or DEFAULT_HOLDOUT_OBSERVATION
        self._show("$holdout", f"control group: receives nothing, watched {watch} for the goal")
        started = self._progress.waiting.started_at if self._progress.waiting else workflow.now()
        self._step = ("$holdout", 0, started)
        if goal is not None:
            await self._wait(lambda: False, watch)
        await self._record(
            StepRecord(
                step_id="$holdout",
                type="holdout",
                outcome="converted" if self._goal_event else "held_out",
                started_at=started,
                finished_at=workflow.now(),
            )
        )
        if self._goal_event is not None:
            await self._convert(self._goal_event)
        else:
            self._status = "completed"
            self._show(None, "completed (control group)")
        return self._finish()

    def _split(self, step: SplitStep) -> str:
        point = bucket(self._input.journey_id, self._input.customer_id, step.id) * sum(v.weight for v in step.variants)
        for variant in step.variants:
            point -= variant.weight
            if point < 0:
                return variant.name
        return step.variants[-1].name

    async def _moment(self, step: WaitUntilStep) -> datetime | None:
        """The UTC instant a wait_until step waits for (None: the profile has no usable date).

        Computed by a local activity, so the answer is in the history: replay never depends on the time-zone
        database of the worker that replays.
        """
        result = await workflow.execute_local_activity_method(
            JourneyActivities.resolve_moment,
            MomentRequest(
                customer_id=self._customer,
                step=step,
                now=workflow.now(),
                default_timezone=self._input.default_timezone,
                trigger_properties=self._input.trigger.properties,
            ),
            start_to_close_timeout=PROFILE_TIMEOUT,
            retry_policy=PROFILE_RETRY,
        )
        return result.until

    def _find_event(self, step: WaitForStep) -> Event | None:
        start = self._progress.step_started_event_index if step.since == "step" else 0
        for event in self._progress.events[start:]:
            if event.name == step.event and event.event_id != self._input.trigger.event_id:
                if step.where is None or step.where.evaluate(event.properties):
                    return event
        return None

    def _is_goal(self, event: Event) -> bool:
        goal = self._journey.goal
        if goal is None or event.name != goal.event or event.event_id == self._input.trigger.event_id:
            return False
        entered = self._progress.entered_at
        if goal.within is not None and entered is not None and workflow.now() - entered > goal.within:
            return False
        return goal.where is None or goal.where.evaluate(event.properties)

    # --- activities ----------------------------------------------------------------------------------------

    async def _send(self, step: SendStep, visit: int, started: datetime) -> SendResult:
        info = workflow.info()
        records_outcome = workflow.patched(SEND_RECORDS_OUTCOME)
        key = self._message_key(step.id, visit)
        content = step.all_content()
        candidates = step.candidates()
        request = SendRequest(
            idempotency_key=key,
            journey_id=self._input.journey_id,
            journey_name=self._journey.name,
            journey_version=self._input.journey_version,
            step_id=step.id,
            visit=visit,
            customer_id=self._customer,
            entry_id=self._input.entry_id,
            channel=candidates[0],
            template=content[candidates[0]],
            topic=step.topic,
            kind=step.kind,
            trigger=self._input.trigger,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            candidates=candidates,
            strategy=step.channels if isinstance(step.channels, str) else "list",
            content=content,
            quiet_hours=step.quiet_hours,
            when_capped=step.when_capped,
            outcome=self._outcome_record([]) if records_outcome else None,
            outcome_started_at=started if records_outcome else None,
            track=step.track,
        )
        while True:
            result = await self._send_once(request.model_copy(update={"now": workflow.now()}), step)
            if result.status != "deferred":
                break
            # Quiet hours or a frequency cap: wait (the goal or an exit may end the journey meanwhile), ask again.
            self._show(step.id, f"step `{step.id}`: {step.channel or 'message'} held back ({result.reason})")
            await self._wait(lambda: False, timedelta(seconds=result.retry_after_seconds or 60))
            if self._interrupted():
                return result.model_copy(
                    update={"status": "skipped", "reason": f"{result.reason}, then {self._why_interrupted()}"}
                )
        if result.status == "sent":
            self._progress.last_message_key = key
        return result

    async def _send_once(self, request: SendRequest, step: SendStep) -> SendResult:
        try:
            return await workflow.execute_activity_method(
                JourneyActivities.send_message,
                request,
                start_to_close_timeout=SEND_TIMEOUT,
                heartbeat_timeout=SEND_HEARTBEAT,
                retry_policy=SEND_RETRY,
                summary=f"{'/'.join(request.candidates)}: {step.label or step.id}",
            )
        except ActivityError as err:
            # Retries are exhausted: the provider never took the message. Record it and carry on.
            reason = f"delivery_error: {err.cause or err}"[:500]
            return await workflow.execute_local_activity_method(
                JourneyActivities.record_send_failure,
                SendFailure(request=request.model_copy(update={"template": {}, "content": {}}), reason=reason),
                start_to_close_timeout=RECORD_TIMEOUT,
                retry_policy=RECORD_RETRY,
            )

    async def _branch(self, step: BranchStep) -> str:
        """The target field of the first case that holds (``then``/``else`` in the simple form)."""
        profile = await self._load_profile()
        latest: dict[str, Any] = {}
        for event in self._progress.events:
            latest[event.name] = event.properties
        data = {
            "profile": profile.as_condition_data(),
            "trigger": self._input.trigger.properties,
            "events": latest,
            "responses": self._progress.responses,
        }
        history = step.history_conditions()
        matches: list[bool] = []
        if history:
            result = await workflow.execute_local_activity_method(
                StepActivities.check_history,
                HistoryRequest(customer_id=self._customer, conditions=history, now=workflow.now()),
                start_to_close_timeout=PROFILE_TIMEOUT,
                retry_policy=PROFILE_RETRY,
            )
            matches = result.matches
        for index, case in enumerate(step.case_list()):
            holds = case.where is None or case.where.evaluate(data)
            checks, matches = matches[: len(case.history)], matches[len(case.history) :]
            if holds and all(checks):
                return "then" if step.cases is None else f"cases[{index}]"
        return "else" if step.cases is None else "default"

    def _message_key(self, step_id: str, visit: int) -> str:
        """The idempotency key of what a step does on this visit: journey, the customer the run started for (kept
        after an identify), entry, step, visit."""
        return ":".join([self._input.journey_id, self._input.customer_id, self._input.entry_id, step_id, str(visit)])

    def _context(self, step_id: str, visit: int) -> StepContext:
        return StepContext(
            journey_id=self._input.journey_id,
            journey_name=self._journey.name,
            step_id=step_id,
            customer_id=self._customer,
            entry_id=self._input.entry_id,
            trigger=self._input.trigger,
            idempotency_key=self._message_key(step_id, visit),
        )

    async def _call_webhook(self, step: WebhookStep, visit: int) -> WebhookAnswer:
        try:
            return await workflow.execute_activity_method(
                StepActivities.call_webhook,
                WebhookCall(
                    context=self._context(step.id, visit),
                    url=step.url,
                    method=step.method,
                    headers=step.headers,
                    body=step.body,
                ),
                start_to_close_timeout=WEBHOOK_TIMEOUT,
                retry_policy=WEBHOOK_RETRY,
                summary=f"{step.method} {step.url}"[:200],
            )
        except ActivityError as err:
            return WebhookAnswer(ok=False, error=f"gave up: {err.cause or err}"[:500])

    async def _load_profile(self) -> Profile:
        return await workflow.execute_local_activity_method(
            JourneyActivities.load_profile,
            ProfileRequest(customer_id=self._customer),
            start_to_close_timeout=PROFILE_TIMEOUT,
            retry_policy=PROFILE_RETRY,
        )

    async def _record(self, record: StepRecord, *, persist: bool = True, defer: bool = False) -> None:
        """Remember the step; store its outcome unless the step's activity already did.

        ``defer``: store it with the next record instead (the conversion that follows), saving a local activity.
        """
        self._progress.steps_done.append(record)
        self._progress.steps_done_total += 1
        del self._progress.steps_done[:-MAX_STEPS_KEPT]
        if defer:
            self._unrecorded.append(record)
        elif persist:
            steps, self._unrecorded = [*self._unrecorded, record], []
            await workflow.execute_local_activity_method(
                JourneyActivities.record_step_outcomes,
                self._outcome_record(steps),
                start_to_close_timeout=RECORD_TIMEOUT,
                retry_policy=RECORD_RETRY,
            )

    def _outcome_record(self, steps: list[StepRecord]) -> OutcomeRecord:
        info = workflow.info()
        return OutcomeRecord(
            journey_id=self._input.journey_id,
            journey_version=self._input.journey_version,
            customer_id=self._customer,
            entry_id=self._input.entry_id,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            steps=steps,
        )

    async def _convert(self, event: Event) -> None:
        goal = self._journey.goal
        value = lookup(event.properties, goal.value_property) if goal and goal.value_property else None
        await workflow.execute_local_activity_method(
            JourneyActivities.record_conversion,
            ConversionRecord(
                journey_id=self._input.journey_id,
                journey_version=self._input.journey_version,
                customer_id=self._customer,
                entry_id=self._input.entry_id,
                event=event,
                value=float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None,
                last_message_key=self._progress.last_message_key,
                variant=self._progress.variant,
                variants=dict(self._progress.variants) or None,
                converted_at=workflow.now(),
                outcomes=self._outcome_record(self._unrecorded) if self._unrecorded else None,
            ),
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
        )
        self._unrecorded = []
        self._status = "converted"
        self._show(None, f"converted: {event.name}")

    # --- presentation and lifecycle ------------------------------------------------------------------------

    def _failed(self, step_id: str, detail: dict[str, Any]) -> None:
        """A step failed: say so where operators look (search attributes, current details); the journey goes on."""
        reason = str(detail.get("reason") or detail.get("error") or "failed")
        self._failure = f"step `{step_id}` failed: {_short(reason)}"
        if workflow.patched(FAILURES_VISIBLE):
            workflow.upsert_search_attributes(
                [sa.HEALTH.value_set(sa.HEALTH_STEP_FAILED), sa.FAILED_STEP.value_set(step_id)]
            )

    def _show(self, step_id: str | None, details: str) -> None:
        """What the Temporal UI shows: the step as a search attribute, and readable current details."""
        self._current = step_id
        workflow.upsert_search_attributes([sa.STEP.value_set(step_id or self._status)])
        failure = f"\n\n⚠ {self._failure}" if self._failure else ""
        workflow.set_current_details(f"**{self._journey.name}** · customer `{self._customer}`\n\n{details}{failure}")

    def _finish(self) -> JourneyResult:
        if self._status == "exited":
            self._show(None, f"exited: {self._exit_reason}")
        return JourneyResult(
            status=self._status,
            exit_reason=self._exit_reason,
            steps_done_total=self._progress.steps_done_total,
            conversion_event_id=self._goal_event.event_id if self._goal_event else None,
            variant=self._progress.variant,
        )

    async def _continue_as_new(self, step_id: str, waiting: WaitInProgress | None = None) -> None:
        """Carry on in a new run from ``step_id`` (from the middle of its wait when ``waiting`` is set)."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        kept = self._progress.events[-MAX_EVENTS_KEPT:]
        dropped = len(self._progress.events) - len(kept)
        update: dict[str, Any] = {
            "current_step": step_id,
            "events": kept,
            "seen_event_ids": self._progress.seen_event_ids[-MAX_SEEN_IDS_KEPT:],
            "step_started_event_index": 0,
        }
        if waiting is not None:
            # The step's events so far still count for a wait_for with ``since: step``.
            update["waiting"] = waiting
            update["step_started_event_index"] = max(0, self._progress.step_started_event_index - dropped)
        progress = self._progress.model_copy(update=update)
        workflow.continue_as_new(self._input.model_copy(update={"progress": progress}))


_UNITS = (("week", 604_800), ("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1))


def spoken(span: timedelta) -> str:
    """A duration as people say it, to its two largest units: ``2 days``, ``1 day 6 hours``, ``90 seconds``
    reads ``1 minute 30 seconds``."""
    seconds, parts = int(span.total_seconds()), []
    for name, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return " ".join(parts[:2]) or "0 seconds"


def _until(span: timedelta) -> str:
    """``2 days (until 12 Dec 09:00 UTC)``, from the workflow's clock (the current details only: no command)."""
    return f"{spoken(span)} (until {(workflow.now() + span).astimezone(UTC):%d %b %H:%M} UTC)"


def _short(reason: str, limit: int = 200) -> str:
    """The first line of a failure, at most ``limit`` characters: the cause, not a traceback."""
    line = reason.strip().splitlines()[0] if reason.strip() else reason
    return line if len(line) <= limit else line[: limit - 1] + "…"


if missing := set(get_args(AnyStep)) - set(_STEP_TYPES):
    raise TypeError(f"step types without a handler: {sorted(m.__name__ for m in missing)}")
