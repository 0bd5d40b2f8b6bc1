"""The activities a journey runs: load the profile, send a message, record what happened.

``send_message`` is the last word on whether a customer is messaged. In one database transaction it locks the
customer row, looks the idempotency key up, checks consent and reachability, renders, calls the provider and
records the answer. Holding the customer's row lock across the provider call means a consent change recorded
for that customer (which must take the same lock) lands either before the check or after the message is
recorded, never in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal

import structlog
from opentelemetry import trace
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import policy
from activities.channels import push as push_channel
from activities.channels import sms as sms_channel
from activities.channels.base import (
    Channel,
    DeliveryResult,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from activities.links import template_links, tracking_payload, unsubscribe_url
from activities.models import (
    ConversionRecord,
    MomentRequest,
    MomentResult,
    OutcomeRecord,
    Profile,
    ProfileRequest,
    SendFailure,
    SendRequest,
    SendResult,
)
from activities.profiles import fetch_profile, liquid_context, profile_of
from activities.send_reads import BatchReads, SendReads
from activities.tracking import track_content
from config import metrics
from config.settings import Settings
from contracts.journey import StepRecord
from journeys import calendar
from journeys.conditions import lookup
from journeys.sms import measure
from journeys.templates import HTML_KEYS, TemplateError, render_value
from store import conversions as conversion_store
from store import customers as customer_store
from store import deliveries as delivery_store
from store import messages as message_store
from store import outcomes as outcome_store
from store import suppressions
from store.db import Connection, Db, Pool, connection, transaction

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

_UNREAD: Any = object()
"""``decide``'s default: read the customer row (the send passes the one it locked)."""


class JourneyActivities:
    """Activities with their dependencies injected; the worker registers the bound methods."""

    def __init__(self, pool: Pool, channels: dict[str, Channel], settings: Settings) -> None:
        self._pool = pool
        self._channels = channels
        self._settings = settings

    def all(self) -> list[Any]:
        return [
            self.load_profile,
            self.resolve_moment,
            self.send_message,
            self.record_send_failure,
            self.record_step_outcomes,
            self.record_conversion,
        ]

    @activity.defn(name="load_profile")
    async def load_profile(self, request: ProfileRequest) -> Profile:
        async with connection(self._pool) as conn:
            return await fetch_profile(conn, request.customer_id)

    @activity.defn(name="resolve_moment")
    async def resolve_moment(self, request: MomentRequest) -> MomentResult:
        """When a wait_until step ends for this customer: their zone, their dates, the step's rule."""
        async with connection(self._pool) as conn:
            profile = await fetch_profile(conn, request.customer_id)
        tz = calendar.zone(profile.timezone, request.default_timezone)
        return MomentResult(until=_moment(request, profile, tz), timezone=tz.key)

    @activity.defn(name="send_message")
    async def send_message(self, request: SendRequest) -> SendResult:
        delivered = _delivered_before(request.idempotency_key)
        if delivered is None:
            activity.heartbeat()  # alive; the details slot stays free for "delivered"
        now = request.now or datetime.now(UTC)
        try:
            return await self._send_and_record(request, delivered, now)
        except TransientDeliveryError as exc:
            # Temporal retries it. One line, cause first, no chained traceback: what the run's pending activity,
            # the failed step's reason and the worker's log show ("Failure exceeds size limit" otherwise).
            raise ApplicationError(_one_line(str(exc)), type="TransientDeliveryError") from None

    async def _send_and_record(
        self, request: SendRequest, delivered: tuple[str, DeliveryResult] | None, now: datetime
    ) -> SendResult:
        async with transaction(self._pool) as conn:
            result = await self._send_locked(conn, request, delivered, now)
            if request.outcome is not None and result.status != "deferred":
                # The step's outcome, in the same transaction as the message: one round trip less per send.
                await _insert_outcomes(
                    conn, request.outcome.model_copy(update={"steps": [_send_outcome(request, result)]})
                )
                result.outcome_recorded = True
        _count_send(result)
        return result

    async def send_once(self, request: SendRequest) -> SendResult:
        """One send in its own transaction, as ``send_message`` without a step outcome (broadcasts' messages)."""
        delivered = _delivered_before(request.idempotency_key)
        async with transaction(self._pool) as conn:
            result = await self._send_locked(conn, request, delivered, request.now or datetime.now(UTC))
        _count_send(result)
        return result

    async def send_batch(
        self,
        requests: Sequence[SendRequest],
        *,
        concurrency: int | asyncio.Semaphore = 8,
        stopped: Callable[[], bool] = lambda: False,
        delivered: list[dict[str, Any]] | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> list[SendResult | BaseException | None]:
        """Many sends, each to a different customer (a broadcast's chunk), answering as ``send_once`` would for
        each, in order, or with the exception that send raised; None for a send not begun because ``stopped()``
        said so.

        Unlike a single send, a batch does not hold its customers' row locks while it delivers:

        1. one short transaction locks the customers (in id order), reads their rows, keys, consent,
           suppressions, devices and recent marketing in one statement per kind (``BatchReads``), decides every
           send with ``decide()`` as a single send would, and records a final row for each skip and a ``pending``
           row (the decision, its key) for each send to make; commit;
        2. deliver outside any transaction, up to ``concurrency`` at once (a semaphore: shared with other batches,
           so several chunks together use that many SMTP sessions);
        3. a second short transaction records the outcomes over the pending rows, the suppressions (and SMS
           opt-outs) the providers' refusals call for, and deletes the pending rows of sends known not to have
           gone (a transient failure, a stop), so a retry decides them afresh. The sent ones are written already
           while the others deliver, within ``SENT_RECORD_SECONDS``, so a worker that dies repeats little.

        A consent change or an erasure waits for step 1 only: it lands after the decision, and the message
        decided before it goes out (as it would have if it had come a moment later). A pending message counts
        against frequency caps as a sent one.

        Delivery is at least once, as for single sends. What was delivered is heartbeated before step 3, so a
        retry after a failed commit records those sends instead of delivering them again. A caller that heartbeats
        on its own (a broadcast batch, with several chunks in flight) passes ``delivered``, a list each delivery
        is appended to as it completes, and ``heartbeat``, called instead of the batch's own heartbeat before
        step 3: its heartbeats must carry that list (as ``delivered_batch``) until this returns. A pending row an
        attempt left behind without an outcome (the worker died while delivering) may or may not have gone: the
        next attempt delivers it once more, with the same idempotency key (the email's Message-ID), and marks the
        row so; if that attempt dies too, the row is recorded ``failed`` (``delivery_unconfirmed``) rather than
        risk a third copy.
        """
        if not requests:
            return []
        if len({r.customer_id for r in requests}) != len(requests):
            raise ValueError("a batch sends to each customer at most once")
        before = _delivered_in_batch()
        clock = [r.now or datetime.now(UTC) for r in requests]
        answers: list[SendResult | BaseException | None] = [None] * len(requests)
        plans: list[tuple[int, _Planned]] = []
        async with transaction(self._pool) as conn:
            batch = _Batch(await BatchReads.load(conn, requests, min(clock)))
            if delivered is not None:
                batch.delivered = delivered
            for i, (request, now) in enumerate(zip(requests, clock, strict=True)):
                planned = await self._plan(conn, request, before.get(request.idempotency_key), now, batch)
                if isinstance(planned, _Planned):
                    plans.append((i, planned))
                else:
                    answers[i] = planned
            await message_store.settle_messages(conn, batch.messages)
        batch.messages = []

        semaphore = (
            concurrency if isinstance(concurrency, asyncio.Semaphore) else asyncio.Semaphore(max(concurrency, 1))
        )

        async def one(planned: _Planned) -> SendResult | None:
            async with semaphore:
                if stopped():
                    return None
                return await self._deliver_planned(planned)

        finished = asyncio.Event()
        flusher = asyncio.create_task(self._record_sent_meanwhile(batch, finished))
        try:
            outcomes = await asyncio.gather(*(one(p) for _, p in plans), return_exceptions=True)
        finally:
            finished.set()
            batch.arrived.set()
            await flusher
        if heartbeat is not None:
            heartbeat()
        elif batch.delivered and activity.in_activity():
            activity.heartbeat({"delivered_batch": batch.delivered})
        undone = [
            p.record.request.idempotency_key
            for (_, p), outcome in zip(plans, outcomes, strict=True)
            # A claimed row of an attempt that died stays pending: the next attempt records it unconfirmed.
            if not isinstance(outcome, SendResult) and p.attempts == 1
        ]
        if batch.messages or batch.refusals or undone:
            async with transaction(self._pool) as conn:
                for refusal in batch.refusals:
                    await _apply_refusal(conn, *refusal)
                await message_store.record_outcomes(conn, batch.messages)
                await message_store.drop_pending(conn, undone)
        for (i, _), outcome in zip(plans, outcomes, strict=True):
            answers[i] = outcome
        return answers

    async def _record_sent_meanwhile(self, batch: _Batch, finished: asyncio.Event) -> None:
        """While a batch delivers, write the outcome rows of the messages sent so far as soon as one is sent, at
        most once every ``SENT_RECORD_SECONDS`` (what is sent meanwhile goes in the next write), so a worker that
        dies mid-batch leaves the retry only the last moment's deliveries to send once more (heartbeats reach the
        server every few seconds at best). Sent messages only: a refusal is recorded with its suppression in the
        batch's final transaction, which also writes whatever this did not (a failed write here leaves its
        messages to it). ``send_batch`` sets ``batch.arrived`` with ``finished`` so this ends at once."""
        while True:
            await batch.arrived.wait()
            if finished.is_set():
                return
            batch.arrived.clear()
            sent = [m for m in batch.messages if m.status == "sent"]
            if sent:
                batch.messages = [m for m in batch.messages if m.status != "sent"]
                try:
                    await message_store.record_outcomes(self._pool, sent)
                except Exception as exc:
                    batch.messages.extend(sent)
                    log.warning("send.batch_record_deferred", messages=len(sent), error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), SENT_RECORD_SECONDS)

    async def _plan(
        self,
        conn: Connection,
        request: SendRequest,
        delivered: tuple[str, DeliveryResult] | None,
        now: datetime,
        batch: _Batch,
    ) -> SendResult | _Planned:
        """Step 1 of ``send_batch`` for one send, under its customer's row lock: a final answer (its row queued
        on ``batch.messages``), or the decision to deliver (its pending row queued)."""
        reads = batch.reads
        customer = await reads.customer(request.customer_id, lock=True)
        existing = await reads.existing(request.idempotency_key)
        if existing is not None and existing.status != "pending":
            return _duplicate(request, existing)
        record = _Recorder(conn, request, now, batch)
        if delivered is not None:
            # An earlier attempt delivered but could not record it: record, never deliver again.
            channel, result = delivered
            return await self._record(record, "sent", None, channel or request.channel, result=result)
        attempts = 1
        if existing is not None:
            # An earlier attempt decided this send and died delivering it: it may have gone or not.
            if existing.attempts >= 2:
                return await self._record(
                    record,
                    "failed",
                    "delivery_unconfirmed: two attempts died while delivering; not tried a third time",
                    existing.channel,
                )
            attempts = existing.attempts + 1
        decision = await self.decide(conn, request, now, customer=customer, reads=reads)
        record.choice = decision.choice()
        if decision.verdict == "skip":
            return await self._record(record, "skipped", decision.reason, decision.channel)
        if decision.verdict == "defer":
            assert decision.reason is not None and decision.wait is not None
            return _deferred(request, decision.channel, decision.reason, decision.wait)
        first = decision.usable[0]
        pending = _new_message(
            request,
            "pending",
            None,
            first.recipient,
            None,
            None,
            error=None,
            channel=first.channel,
            decided_at=now,
            choice=record.choice,
        )
        batch.messages.append(dataclasses.replace(pending, attempts=attempts))
        return _Planned(record, decision, attempts)

    async def _deliver_planned(self, planned: _Planned) -> SendResult:
        """Step 2 of ``send_batch`` for one send: try its usable channels in order, outside any transaction."""
        record, decision = planned.record, planned.decision
        assert decision.profile is not None
        record.conn = None  # step 1's transaction is over: everything is recorded in step 3
        failures: list[dict[str, Any]] = []
        for chosen in decision.usable:
            try:
                outcome = await self._deliver(record, decision.profile, chosen, failures)
            except Exception as exc:
                if not failures:
                    raise  # nothing happened: the pending row goes, and a retry decides afresh
                # An earlier channel refused for good (its suppression is recorded in step 3), then this one failed
                # for now: record the failure with the refusal rather than leave the suppression without its message.
                refused = "; ".join(f"{f['channel']}: {f['error']}" for f in failures)
                failures.append({"channel": chosen.channel, "error": f"transient: {exc}"})
                record.choice["failed"] = failures
                reason = f"provider_rejected: {refused}; then {chosen.channel} failed for now: {exc}"
                return await self._all_failed(record, decision.usable[: len(failures)], failures, reason)
            if outcome is not None:
                return outcome
        return await self._all_failed(record, decision.usable, failures)

    async def _send_locked(
        self,
        conn: Connection,
        request: SendRequest,
        delivered: tuple[str, DeliveryResult] | None,
        now: datetime,
    ) -> SendResult:
        """Decide, deliver and record one send, in the caller's transaction (under the customer's row lock)."""
        reads = SendReads(conn)
        customer = await reads.customer(request.customer_id, lock=True)
        existing = await reads.existing(request.idempotency_key)
        # A message an earlier run failed to send is tried again by this one (a reset re-ran the step); one that
        # was sent, or that this run recorded, is answered as recorded.
        retry = existing is not None and existing.retried_by(request.run_id or None)
        if existing is not None and not retry:
            return _duplicate(request, existing)
        record = _Recorder(conn, request, now)
        record.replaces = retry
        if delivered is not None:
            # An earlier attempt delivered but could not record it: record, never deliver again.
            channel, result = delivered
            return await self._record(record, "sent", None, channel or request.channel, result=result)
        decision = await self.decide(conn, request, now, customer=customer, reads=reads)
        record.choice = decision.choice()
        if "push" in decision.order:
            # An earlier attempt's push reached some device: keep to push (activities.channels.push).
            settled, decision = await _after_partial_push(record, decision)
            if settled is not None:
                return await self._record(record, "sent", None, "push", recipient=settled[0], result=settled[1])
        if decision.verdict == "skip":
            return await self._record(record, "skipped", decision.reason, decision.channel)
        if decision.verdict == "defer":
            assert decision.reason is not None and decision.wait is not None
            return _deferred(request, decision.channel, decision.reason, decision.wait)
        assert decision.profile is not None
        failures: list[dict[str, Any]] = []
        for chosen in decision.usable:
            outcome = await self._deliver(record, decision.profile, chosen, failures)
            if outcome is not None:
                return outcome
        return await self._all_failed(record, decision.usable, failures)

    async def _all_failed(
        self,
        record: _Recorder,
        usable: list[policy.Candidate],
        failures: list[dict[str, Any]],
        reason: str | None = None,
    ) -> SendResult:
        """Record the send failed: the usable channels were tried and none took the message."""
        last = failures[-1] if failures else {}
        if reason is None:
            reason = f"provider_rejected: {last['error']}" if failures else "no_usable_channel"
        return await self._record(
            record,
            "failed",
            reason,
            usable[-1].channel,
            recipient=usable[-1].recipient,
            result=DeliveryResult(response={**(last.get("response") or {}), "attempts": failures}),
        )

    async def decide(
        self,
        conn: Connection,
        request: SendRequest,
        now: datetime,
        *,
        customer: Any = _UNREAD,
        reads: SendReads | None = None,
    ) -> Decision:
        """The send policy for one send, read-only: which channels in which order, which are refused and why
        (consent, topic, suppression, reachability), then quiet hours and frequency caps for marketing.

        The send activity calls it under the customer's row lock (passing the locked ``customer`` row); previews
        call it without a lock and deliver nothing. ``reads``: where the customer's state is read (a batch's
        answers read at once); by default one statement per question on ``conn``.
        """
        reads = reads or SendReads(conn)
        if customer is _UNREAD:
            customer = await reads.customer(request.customer_id, lock=False)
        if customer is None:
            return Decision(None, [request.channel], "", [], [], "skip", "unknown_customer", request.channel)
        profile = profile_of(customer, await reads.consent(request.customer_id))
        segments = self.sms_segments(request, profile) if request.strategy == "cheapest" else 1
        order, why = policy.ordered_channels(request, profile, self._settings, sms_segments=segments)
        topic_defaults = await reads.topic_defaults()
        devices = await reads.devices(request.customer_id) if "push" in order else []
        candidates = [policy.candidate(request, profile, c, self._settings, topic_defaults, devices) for c in order]
        candidates = [await _unless_suppressed(reads, c) for c in candidates]
        usable = [c for c in candidates if c.refusal is None]
        decision = Decision(profile, order, why, candidates, usable, "send", None, order[0])
        if not usable:
            reasons = [c.refusal for c in candidates if c.refusal]
            reason = reasons[0] if len(reasons) == 1 else "no_usable_channel: " + "; ".join(map(str, reasons))
            return dataclasses.replace(decision, verdict="skip", reason=reason)

        if request.kind == "marketing":
            quiet_until = policy.quiet_hours_end(profile, self._settings, now)
            if quiet_until is not None:
                verdict: Literal["skip", "defer"] = "skip" if request.quiet_hours == "skip" else "defer"
                return dataclasses.replace(
                    decision, verdict=verdict, reason="quiet_hours", channel=usable[0].channel, wait=quiet_until - now
                )
            allowed, capped = await self._within_caps(reads, request, profile, usable, now)
            if not allowed:
                cap, wait = min(capped, key=lambda item: item[1])
                verdict = "skip" if request.when_capped == "skip" else "defer"
                return dataclasses.replace(
                    decision, verdict=verdict, reason=f"frequency_cap: {cap.describe()}", usable=[], wait=wait
                )
            decision = dataclasses.replace(decision, usable=allowed)
        return decision

    def sms_segments(self, request: SendRequest, profile: Profile) -> int | None:
        """The segments the step's SMS takes for this customer: rendered and link-tracked as it would be sent
        (``channels: cheapest`` ranks SMS by what it really costs). None when it cannot be rendered or is empty."""
        if "sms" not in request.candidates:
            return 1
        own_links = template_links(self._settings, request.customer_id, None)
        try:
            content = self.render(request, profile, "sms", links=own_links)
        except TemplateError:
            return None
        if request.track:
            message = OutboundMessage(
                idempotency_key=request.idempotency_key,
                customer_id=request.customer_id,
                channel="sms",
                journey_id=request.journey_id,
                step_id=request.step_id,
                content=content,
            )
            content = _tracked(self._settings, message, own_links)
        text = content.get("text")
        return measure(text).segments if isinstance(text, str) and text.strip() else None

    def render(
        self,
        request: SendRequest,
        profile: Profile,
        channel: str,
        *,
        unsubscribe: str | None = None,
        links: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The channel's content for this customer (locale, Liquid), untracked. Raises ``TemplateError``.

        ``links``: the customer's own links (``template_links``) when the caller has them already.
        """
        fields = request.content.get(channel) or (request.template if channel == request.channel else {})
        own_links = links if links is not None else template_links(self._settings, request.customer_id, unsubscribe)
        return render_value(
            policy.localized(fields, profile.locale),
            {
                **liquid_context(profile, request.trigger, request.journey_id, request.journey_name, request.step_id),
                **own_links,
            },
            # Email HTML escapes customer and event data (`| trusted` opts out); text parts and other channels do not.
            html_keys=HTML_KEYS if channel == "email" else frozenset(),
        )

    async def _deliver(
        self, record: _Recorder, profile: Profile, chosen: policy.Candidate, failures: list[dict[str, Any]]
    ) -> SendResult | None:
        """Try one channel. A SendResult when the step is settled; None to try the next channel."""
        request = record.request
        message = OutboundMessage(
            idempotency_key=request.idempotency_key,
            customer_id=request.customer_id,
            channel=chosen.channel,
            recipient=chosen.recipient,
            kind=request.kind,
            topic=request.topic,
            journey_id=request.journey_id,
            step_id=request.step_id,
            unsubscribe_url=(
                unsubscribe_url(
                    self._settings, request.customer_id, chosen.channel, request.topic, request.idempotency_key
                )
                if request.kind == "marketing" and chosen.channel == "email"
                else None
            ),
        )
        own_links = template_links(self._settings, request.customer_id, message.unsubscribe_url)
        try:
            message.content = self.render(request, profile, chosen.channel, links=own_links)
        except TemplateError as exc:
            return await self._record(
                record, "failed", f"template_error: {exc}", chosen.channel, recipient=chosen.recipient
            )
        if request.track:
            message.content = _tracked(self._settings, message, own_links)
        channel = self._channels.get(chosen.channel)
        if channel is None:
            failures.append({"channel": chosen.channel, "error": "channel_not_configured"})
            return None
        record.choice["chosen"] = chosen.channel
        try:
            with (
                tracer.start_as_current_span(
                    f"deliver {chosen.channel}",
                    kind=trace.SpanKind.CLIENT,
                    attributes={
                        "parcours.channel": chosen.channel,
                        "parcours.idempotency_key": request.idempotency_key,
                    },
                ),
                metrics.timed(metrics.PROVIDER_SECONDS, channel=chosen.channel, result="error") as timing,
            ):
                try:
                    result = await channel.deliver(message)
                except PermanentDeliveryError:
                    timing["result"] = "refused"
                    raise
                timing["result"] = "ok"
        except PermanentDeliveryError as exc:
            log.warning("send.permanent_failure", key=request.idempotency_key, channel=chosen.channel, error=str(exc))
            failures.append({"channel": chosen.channel, "error": str(exc), "response": exc.response})
            if record.batch is not None:  # recorded with the outcomes, in the batch's second transaction
                record.batch.refusals.append((request, chosen.channel, chosen.recipient, str(exc), exc.response))
            else:  # in this transaction: recorded with the failed message, or not at all
                assert record.conn is not None
                await _apply_refusal(record.conn, request, chosen.channel, chosen.recipient, str(exc), exc.response)
            record.choice["failed"] = failures
            return None
        # Transient errors propagate: the transaction rolls back and Temporal retries the activity.
        delivered = {
            "idempotency_key": request.idempotency_key,
            "channel": chosen.channel,
            "delivered": result.model_dump(mode="json"),
        }
        if record.batch is not None:
            record.batch.delivered.append(delivered)  # the batch heartbeats them all at once, before it commits
        else:
            activity.heartbeat(delivered)
        return await self._record(
            record, "sent", None, chosen.channel, recipient=chosen.recipient, result=result, rendered=message.content
        )

    async def _within_caps(
        self, reads: SendReads, request: SendRequest, profile: Profile, usable: list[policy.Candidate], now: datetime
    ) -> tuple[list[policy.Candidate], list[tuple[policy.Cap, timedelta]]]:
        """The usable channels no frequency cap blocks, and the caps that block the others."""
        caps = policy.caps_for(profile, self._settings)
        if not caps:
            return usable, []
        longest = max(cap.per for cap in caps)
        recent = await reads.marketing_sent_since(request.customer_id, now - longest)
        sent = [(m.channel, m.decided_at) for m in recent]
        allowed, blocked = [], []
        for candidate in usable:
            hit = policy.cap_blocking(caps, candidate.channel, sent, now)
            if hit is None:
                allowed.append(candidate)
            else:
                blocked.append(hit)
        return allowed, blocked

    @activity.defn(name="record_send_failure")
    async def record_send_failure(self, failure: SendFailure) -> SendResult:
        request = failure.request
        async with transaction(self._pool) as conn:
            # An earlier run's failure gives way to this run's (a reset re-ran the send and it failed again).
            before = await message_store.message_status(conn, request.idempotency_key)
            earlier = None
            if before is not None and before.retried_by(request.run_id or None):
                earlier = await message_store.supersede_failed(conn, request.idempotency_key, request.run_id)
            await message_store.insert_message(
                conn,
                _new_message(
                    request, "failed", failure.reason, None, None, None, error=failure.reason, earlier=earlier
                ),
            )
            row = await message_store.message_status(conn, request.idempotency_key)
        assert row is not None  # inserted just now, or already there
        result = SendResult(
            status=row.status,  # type: ignore[arg-type]  # what a send recorded: sent, skipped, failed
            reason=row.reason,
            channel=request.channel,
            idempotency_key=request.idempotency_key,
        )
        _count_send(result)
        return result

    @activity.defn(name="record_step_outcomes")
    async def record_step_outcomes(self, record: OutcomeRecord) -> None:
        await _insert_outcomes(self._pool, record)

    @activity.defn(name="record_conversion")
    async def record_conversion(self, record: ConversionRecord) -> None:
        async with transaction(self._pool) as conn:
            if record.outcomes is not None:
                await _insert_outcomes(conn, record.outcomes)
            await conversion_store.record_conversion(
                conn,
                conversion_store.Conversion(
                    journey_id=record.journey_id,
                    journey_version=record.journey_version,
                    customer_id=record.customer_id,
                    entry_id=record.entry_id,
                    event_id=record.event.event_id,
                    event_name=record.event.name,
                    value=record.value,
                    variant=record.variant,
                    variants=record.variants,
                    last_message_key=record.last_message_key,
                    converted_at=record.converted_at,
                ),
            )
        metrics.CONVERSIONS.labels(journey=record.journey_id).inc()

    async def _record(
        self,
        record: _Recorder,
        status: str,
        reason: str | None,
        channel: str,
        *,
        recipient: str | None = None,
        result: DeliveryResult | None = None,
        rendered: dict[str, Any] | None = None,
    ) -> SendResult:
        earlier = None
        if record.replaces:
            assert record.conn is not None  # only a single send retries an earlier run's failure, in its transaction
            earlier = await message_store.supersede_failed(
                record.conn, record.request.idempotency_key, record.request.run_id
            )
        message = _new_message(
            record.request,
            status,
            reason,
            recipient,
            result,
            rendered,
            error=reason if status == "failed" else None,
            channel=channel,
            decided_at=record.now,
            choice=record.choice,
            earlier=earlier,
        )
        if record.batch is not None:
            record.batch.messages.append(message)
            if status == "sent":
                record.batch.arrived.set()  # written within SENT_RECORD_SECONDS (``_record_sent_meanwhile``)
        else:
            assert record.conn is not None
            await message_store.insert_message(record.conn, message)
        log.info(
            "send.recorded",
            key=record.request.idempotency_key,
            status=status,
            reason=reason,
            channel=channel,
            customer_id=record.request.customer_id,
        )
        return SendResult(
            status=status,  # type: ignore[arg-type]
            reason=reason,
            channel=channel,
            idempotency_key=record.request.idempotency_key,
            provider_message_id=result.provider_message_id if result else None,
        )


@dataclass(frozen=True)
class Decision:
    """What the send policy says about one send before any provider is called."""

    profile: Profile | None
    order: list[str]
    why: str
    candidates: list[policy.Candidate]
    usable: list[policy.Candidate]
    """The channels to try, in order (consented, reachable, not suppressed, within caps)."""
    verdict: Literal["send", "skip", "defer"]
    reason: str | None
    channel: str
    """The channel a skip or deferral is recorded on."""
    wait: timedelta | None = None
    """With ``defer``: how long until asking again makes sense (quiet hours end, a cap slot frees up)."""

    def choice(self) -> dict[str, Any]:
        """How the channel was chosen, as the message row records it."""
        if self.profile is None:
            return {}
        return {
            "order": self.order,
            "why": self.why,
            "refused": {c.channel: c.refusal for c in self.candidates if c.refusal},
        }


class _Recorder:
    """What every record of one send shares: its transaction, request, clock and channel choice so far.

    ``batch``: a send of ``send_batch``: its rows and side effects are collected there and written by the batch
    (``conn`` is None while it delivers, outside any transaction)."""

    def __init__(
        self, conn: Connection | None, request: SendRequest, now: datetime, batch: _Batch | None = None
    ) -> None:
        self.conn = conn
        self.request = request
        self.now = now
        self.choice: dict[str, Any] = {}
        self.batch = batch
        self.replaces = False
        """The key's row is a failed attempt of an earlier run, which this send's record replaces."""


_Refusal = tuple[SendRequest, str, str | None, str, dict[str, Any]]
"""A provider's final refusal to record: the send, channel, recipient, error and the provider's response."""


@dataclass
class _Batch:
    """The sends of one ``send_batch``: their reads, and what they delivered and will record."""

    reads: BatchReads
    messages: list[message_store.NewMessage] = dataclasses.field(default_factory=list)
    delivered: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    refusals: list[_Refusal] = dataclasses.field(default_factory=list)
    arrived: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set when a message is sent (its row is to be written) and when the batch has finished delivering."""


@dataclass
class _Planned:
    """A send ``send_batch`` decided to make: its pending row is committed, its delivery is to come."""

    record: _Recorder
    decision: Decision
    attempts: int
    """Deliveries of its key begun, this one included (2: an earlier attempt died delivering it)."""


def _duplicate(request: SendRequest, existing: message_store.MessageStatus) -> SendResult:
    """The answer for a send whose key was recorded already."""
    return SendResult(
        status=existing.status,  # type: ignore[arg-type]  # what a send recorded: sent, skipped, failed
        reason=existing.reason,
        channel=existing.channel,
        idempotency_key=request.idempotency_key,
        provider_message_id=existing.provider_message_id,
        duplicate=True,
    )


async def _after_partial_push(
    record: _Recorder, decision: Decision
) -> tuple[tuple[str, DeliveryResult] | None, Decision]:
    """When an earlier attempt of this send delivered the push to some device (``store.deliveries``): the send
    keeps to push. If push is still to be sent, the decision keeps push only (the devices still waiting get it, no
    other channel is tried); otherwise (the policy now refuses or defers it) the send is settled as sent, with the
    devices that have it: ``((recipient, result), decision)``. Nothing delivered yet: ``(None, decision)``."""
    assert record.conn is not None  # a single send, in its transaction (a batch's push channel skips its devices)
    deliveries = await delivery_store.deliveries_of(record.conn, record.request.idempotency_key)
    result = push_channel.delivered(deliveries)
    if result is None:
        return None, decision
    push = [c for c in decision.usable if c.channel == "push"]
    if decision.verdict == "send" and push:
        return None, dataclasses.replace(decision, usable=push)
    record.choice["push_settled"] = decision.reason or "push no longer usable"
    recipient = "devices:" + ",".join(d.device_id for d in deliveries if d.status == "sent")
    return (recipient, result), decision


async def _unless_suppressed(reads: SendReads, candidate: policy.Candidate) -> policy.Candidate:
    """The candidate, refused with ``suppressed:<reason>`` when its address is suppressed (any kind of message).

    A suppression outranks a consent refusal: it says why this address must not be written to at all.
    """
    reason = await reads.suppression(candidate.channel, candidate.recipient)
    return candidate if reason is None else dataclasses.replace(candidate, refusal=f"suppressed:{reason}")


SENT_RECORD_SECONDS = 0.01
"""At most how often a batch writes what it has sent while its other sends are still delivering (``send_batch``):
a message sent is written within this and one commit, which bounds what a worker killed mid-batch sends twice."""

# SMTP answers that say the mailbox does not exist: 550/551/553 refusing the recipient (RCPT), or any of them
# with an enhanced status 5.1.x (bad destination address) at DATA. A 550 5.7.x (policy, content) is about the
# message, not the address, and suppresses nothing.
_DEAD_MAILBOX_CODES = (550, 551, 553)
_BAD_ADDRESS_STATUS = re.compile(r"\b5\.1\.\d{1,3}\b")


def _dead_mailbox(error: str, response: dict[str, Any]) -> bool:
    if response.get("smtp_code") not in _DEAD_MAILBOX_CODES:
        return False
    return error.startswith("recipient refused") or bool(_BAD_ADDRESS_STATUS.search(str(response.get("smtp_message"))))


async def _apply_refusal(
    conn: Connection,
    request: SendRequest,
    channel: str,
    recipient: str | None,
    error: str,
    response: dict[str, Any],
) -> None:
    """What a provider's final refusal says about the address: a dead mailbox is suppressed; an SMS number that
    opted out withdraws SMS consent, a dead one is suppressed (``activities.channels.sms`` says which codes).
    In the transaction that records the failed message."""
    if not recipient:
        return
    if channel == "email" and _dead_mailbox(error, response):
        await suppressions.add_suppression(
            conn,
            "email",
            recipient,
            "hard_bounce",
            source="smtp",
            detail={"smtp_code": response.get("smtp_code"), "idempotency_key": request.idempotency_key},
        )
    if channel == "sms":
        code = response.get("twilio_code")
        detail = {"twilio_code": code, "idempotency_key": request.idempotency_key}
        if code in sms_channel.OPTED_OUT_CODES:
            # A batch records this after delivering: the customer may have been erased meanwhile (nothing to do).
            with contextlib.suppress(customer_store.UnknownCustomerError):
                await customer_store.record_consent(
                    conn, request.customer_id, "channel", "sms", "withdrawn", source="sms_keyword"
                )
        elif code in sms_channel.DEAD_NUMBER_CODES:
            await suppressions.add_suppression(conn, "sms", recipient, "hard_bounce", source="twilio", detail=detail)


def _tracked(settings: Settings, message: OutboundMessage, own_links: dict[str, str]) -> dict[str, Any]:
    """The rendered content with click (and, for HTML email, open) tracking (``activities.tracking``)."""
    payload = tracking_payload(
        message.customer_id, message.idempotency_key, message.journey_id, message.step_id, message.channel
    )
    return track_content(settings, message.channel, message.content, payload, keep=set(own_links.values()))


def _deferred(request: SendRequest, channel: str, reason: str, wait: timedelta) -> SendResult:
    """Not now: nothing is recorded, the workflow waits ``wait`` and asks again with the same key."""
    return SendResult(
        status="deferred",
        reason=reason,
        channel=channel,
        idempotency_key=request.idempotency_key,
        retry_after_seconds=max(wait.total_seconds(), 1.0),
    )


def _count_send(result: SendResult) -> None:
    """Count a send this call decided (a duplicate found its earlier row; a deferral decided nothing yet)."""
    if not result.duplicate and result.status != "deferred":
        metrics.SENDS.labels(
            channel=result.channel, status=result.status, reason=metrics.reason_code(result.reason)
        ).inc()


async def _insert_outcomes(db: Db, record: OutcomeRecord) -> None:
    for step in record.steps:
        if step.outcome == "failed":
            metrics.FAILED_STEPS.labels(journey=record.journey_id, step_type=step.type).inc()
        elif step.type == "exit":
            metrics.EXITS.labels(journey=record.journey_id).inc()
    await outcome_store.record_outcomes(
        db,
        [
            outcome_store.StepOutcome(
                journey_id=record.journey_id,
                journey_version=record.journey_version,
                customer_id=record.customer_id,
                entry_id=record.entry_id,
                step_id=step.step_id,
                visit=step.visit,
                step_type=step.type,
                outcome=step.outcome,
                detail=step.detail,
                workflow_id=record.workflow_id,
                run_id=record.run_id,
                recorded_at=step.finished_at,
            )
            for step in record.steps
        ],
    )


def _send_outcome(request: SendRequest, result: SendResult) -> StepRecord:
    """The send step's outcome, as the workflow would have recorded it."""
    assert request.outcome is not None
    detail = {"channel": result.channel, "reason": result.reason, "message_key": result.idempotency_key}
    return StepRecord(
        step_id=request.step_id,
        type="send",
        visit=request.visit,
        outcome=result.status,
        detail={k: v for k, v in detail.items() if v is not None},
        started_at=request.outcome_started_at or datetime.now(UTC),
        finished_at=datetime.now(UTC),
    )


def _new_message(
    request: SendRequest,
    status: str,
    reason: str | None,
    recipient: str | None,
    result: DeliveryResult | None,
    rendered: dict[str, Any] | None,
    *,
    error: str | None,
    channel: str | None = None,
    decided_at: datetime | None = None,
    choice: dict[str, Any] | None = None,
    earlier: list[dict[str, Any]] | None = None,
) -> message_store.NewMessage:
    return message_store.NewMessage(
        idempotency_key=request.idempotency_key,
        journey_id=request.journey_id,
        journey_version=request.journey_version,
        step_id=request.step_id,
        customer_id=request.customer_id,
        entry_id=request.entry_id,
        channel=channel or request.channel,
        topic=request.topic,
        kind=request.kind,
        status=status,
        reason=reason,
        recipient=recipient,
        rendered=rendered,
        provider_message_id=result.provider_message_id if result else None,
        provider_response=result.response if result else None,
        error=error,
        attempts=activity.info().attempt if activity.in_activity() else 1,
        decided_at=decided_at or request.now or datetime.now(UTC),
        choice=choice or None,
        segments=result.segments if result else None,
        encoding=result.encoding if result else None,
        cost=result.cost if result else None,
        run_id=request.run_id or None,
        earlier_attempts=earlier or [],
    )


FAILURE_MESSAGE_LENGTH = 300


def _one_line(text: str) -> str:
    """A failure message on one line, at most ``FAILURE_MESSAGE_LENGTH`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= FAILURE_MESSAGE_LENGTH else line[: FAILURE_MESSAGE_LENGTH - 1] + "…"


def _moment(request: MomentRequest, profile: Profile, tz: calendar.ZoneInfo) -> datetime | None:
    step, now = request.step, request.now
    at = step.at or time(9, 0)
    if step.date is not None:
        fixed = step.date if step.date.tzinfo else step.date.replace(tzinfo=tz)
        return calendar.shift_local(fixed.astimezone(UTC), tz, step.offset)
    if step.attribute is not None:
        if step.attribute.startswith("trigger."):
            raw = lookup(request.trigger_properties, step.attribute.removeprefix("trigger."))
        else:
            raw = lookup(profile.as_condition_data(), step.attribute.removeprefix("profile."))
        if step.every_year:
            day = calendar.parse_anniversary(raw)
            return None if day is None else calendar.next_anniversary(now, tz, day, at, step.offset)
        moment = calendar.parse_moment(raw, tz, at)
        if moment is not None and step.at is not None:
            # "at 09:00" on the day of a date-time: its local day at that time.
            moment = calendar.at_local(moment.astimezone(tz).date(), step.at, tz)
        return None if moment is None else calendar.shift_local(moment, tz, step.offset)
    return calendar.next_time_of_day(now, tz, at, tuple(step.weekdays) if step.weekdays else None)


def _delivered_in_batch() -> dict[str, tuple[str, DeliveryResult]]:
    """What an earlier attempt of this activity delivered in a batch it could not commit, by idempotency key."""
    found: dict[str, tuple[str, DeliveryResult]] = {}
    if not activity.in_activity():
        return found
    for detail in activity.info().heartbeat_details:
        if isinstance(detail, dict) and isinstance(detail.get("delivered_batch"), list):
            for one in detail["delivered_batch"]:
                found[one["idempotency_key"]] = (str(one["channel"]), DeliveryResult.model_validate(one["delivered"]))
    return found


def _delivered_before(key: str) -> tuple[str, DeliveryResult] | None:
    """The channel and answer an earlier attempt of this activity delivered, from its heartbeat details."""
    if not activity.in_activity():
        return None
    for detail in activity.info().heartbeat_details:
        if isinstance(detail, dict) and detail.get("idempotency_key") == key and "delivered" in detail:
            return str(detail.get("channel", "")), DeliveryResult.model_validate(detail["delivered"])
    return None
