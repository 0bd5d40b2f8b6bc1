"""Routing behaviour events to journeys, with the events table as the outbox.

``ingest`` stores events idempotently, then routes the newly stored ones at once. Routing (see
docs/ARCHITECTURE.md): for a journey the event triggers, start the workflow ``{journey}:{customer}`` (running:
it is just signalled) once the journey's re-entry policy allows it (``orchestration.admission.enter``); for a
journey that listens to the event, signal the running workflow (none: nothing to do). If Temporal cannot be
reached, the events stay unrouted and the caller still gets "accepted": ``drain`` retries them with backoff, and
also picks up events a crashed process left unrouted.

Identity: an event names its customer by id, by anonymous id or by a linked alias; it is stored under the
customer that resolves to (``store.identity``). A customer's events for a journey whose run was adopted from a
merged profile go to that run's workflow id. After ``identify``, ``notify_merge`` tells the merged profile's runs
who they belong to now (``orchestration.merges``); the drainer retries notifications that failed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import asyncpg
import structlog
from temporalio.client import Client

from config import metrics
from config.settings import Settings
from contracts.journey import EVENT_SIGNAL, Event, workflow_id
from journeys.models import Journey
from orchestration import admission, merges
from orchestration.errors import Meaning, RefusalReason, RunRefusedError, meaning
from orchestration.runs import JourneyRuns
from store import events as event_store
from store import identity as identity_store
from store import journeys as journey_store
from store.db import Connection, connection

log = structlog.get_logger(__name__)

# Every reason an event becomes a dead letter starts at zero on /metrics (alerts see the first one).
for _reason in (*get_args(RefusalReason), "failing"):
    metrics.DEAD_LETTERS.labels(reason=_reason)

# How long one Temporal call may take before the event is left to the drainer.
RPC_TIMEOUT = timedelta(seconds=5)
# The drainer leaves events younger than this to the process that stored them (it is routing them right now).
INLINE_GRACE = timedelta(seconds=10)
# How often other processes' publish/pause/resume are picked up.
JOURNEY_REFRESH_SECONDS = 3.0
DRAIN_BATCH = 200
DRAIN_IDLE_SECONDS = 1.0
DRAIN_MAX_BACKOFF_SECONDS = 30.0
# Routes run concurrently across customers, in order within one customer.
ROUTE_CONCURRENCY = 16
# Backoff of one event after a failed attempt (doubling from the first, jittered): Temporal unreachable is
# everyone's problem and the drainer's own backoff, so it is short; an error of this event alone grows longer,
# and after MAX_ROUTE_ATTEMPTS it becomes a dead letter (reason ``failing``).
EVENT_BACKOFF_SECONDS = 2.0
EVENT_MAX_BACKOFF_SECONDS = 300.0
MAX_ROUTE_ATTEMPTS = 20


@dataclass(frozen=True)
class ActiveJourney:
    journey_id: str
    version: int
    status: str
    definition: Journey


@dataclass
class RouteResult:
    started: list[str] = field(default_factory=list)
    """Workflow ids signalled-with-start (a new entry, or a signal to the running one)."""
    signalled: list[str] = field(default_factory=list)
    """Running workflows that received the event as a listener."""
    refused: list[str] = field(default_factory=list)
    """Workflow ids the journey's re-entry policy kept the customer out of (``once``, ``cooldown``)."""


@dataclass(frozen=True)
class EventOutcome:
    event_id: str
    status: Literal["accepted", "duplicate", "unknown_customer"]
    """``unknown_customer``: the event names an email or phone no customer is linked to; it was not stored."""
    routed: bool
    """False: stored and queued, the drainer routes it when Temporal answers."""
    customer_id: str | None = None
    """The customer the event resolved to."""


class EventRouter:
    def __init__(self, pool: asyncpg.Pool, client: Client, settings: Settings) -> None:
        self._pool = pool
        self._client = client
        self._settings = settings
        self._runs = JourneyRuns.of(client, settings, RPC_TIMEOUT)
        self._journeys: list[ActiveJourney] = []
        self._listeners: dict[str, set[str]] = {}
        self._loaded_at = 0.0
        self._refresh_lock = asyncio.Lock()
        # Set while Temporal is failing: new events go straight to the outbox instead of waiting on timeouts,
        # which also keeps each customer's events in order behind the ones already queued.
        self._degraded = False
        self._wake = asyncio.Event()

    # --- journeys cache ---------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Reload the active journeys now (after a publish, pause or resume in this process)."""
        async with self._refresh_lock:
            async with self._pool.acquire() as conn:
                rows = await journey_store.active_versions(conn)
                listeners = await journey_store.listened_events(conn)
            self._journeys = [ActiveJourney(*row) for row in rows]
            self._listeners = listeners
            self._loaded_at = time.monotonic()

    async def _active(self) -> list[ActiveJourney]:
        if time.monotonic() - self._loaded_at > JOURNEY_REFRESH_SECONDS:
            await self.refresh()
        return self._journeys

    # --- ingestion --------------------------------------------------------------------------------------

    async def ingest(
        self, events: list[Event], keys: list[tuple[str, str, str | None]] | None = None
    ) -> list[EventOutcome]:
        """Resolve, store idempotently and route the new events; a Temporal failure is not the caller's error.

        ``keys``: per event, the alias it names its customer by (``store.events.store_resolved``).
        An event that carries both a customer id and an anonymous id not linked yet links them first, as
        ``identify`` would (source ``event``).
        """
        await self._link_anonymous(events)
        async with self._pool.acquire() as conn:
            stored = await event_store.store_resolved(conn, events, keys)
        resolved = [
            e if c is None or c == e.customer_id else e.model_copy(update={"customer_id": c})
            for e, c in zip(events, stored.customer_ids, strict=True)
        ]
        new = [e for e, is_new in zip(resolved, stored.fresh, strict=True) if is_new]
        for is_new, c in zip(stored.fresh, stored.customer_ids, strict=True):
            metrics.EVENTS.labels(
                status="unknown_customer" if c is None else "accepted" if is_new else "duplicate"
            ).inc()
        routed: set[str] = set()
        if new and not self._degraded:
            routed = await self._route_many(new, adopted=stored.adopted)
            if len(routed) < len(new):
                self._wake.set()
        return [
            EventOutcome(
                e.event_id,
                "unknown_customer" if c is None else "accepted" if is_new else "duplicate",
                is_new and e.event_id in routed,
                c,
            )
            for e, is_new, c in zip(resolved, stored.fresh, stored.customer_ids, strict=True)
        ]

    async def route_stored(self, events: list[Event]) -> set[str]:
        """Route events the caller stored itself (``store.events.store_resolved``, under their resolved customer)
        after answering its own client; what fails stays in the outbox for the drainer. Returns the ids routed."""
        if not events or self._degraded:
            self._wake.set()
            return set()
        routed = await self._route_many(events)
        if len(routed) < len(events):
            self._wake.set()
        return routed

    async def _link_anonymous(self, events: list[Event]) -> None:
        pairs = sorted(
            {
                (e.customer_id, e.anonymous_id)
                for e in events
                if e.anonymous_id and e.customer_id and not e.customer_id.startswith(identity_store.ANON_PREFIX)
            }
        )
        if not pairs:
            return
        known = await identity_store.linked(self._pool, "anonymous_id", [a for _, a in pairs])
        for customer_id, anonymous_id in pairs:
            if anonymous_id in known:
                continue  # linked already (to this customer, or to another: the event keeps its customer id)
            link = identity_store.Link("anonymous_id", anonymous_id, "anonymous_id")
            try:
                result = await identity_store.identify(self._pool, customer_id, [link], source="event", actor="events")
            except identity_store.IdentityConflictError:
                continue  # another call linked it meanwhile
            await self.notify_merges(result.merges)

    async def _route_many(
        self, events: list[Event], conn: Connection | None = None, adopted: dict[str, dict[str, str]] | None = None
    ) -> set[str]:
        """Route ``events`` (in order per customer) and mark the outcome; return the ids routed.

        ``conn``: where to record outcomes (the drainer's transaction, which holds the rows' locks).
        ``adopted``: the customers' adopted runs, when the caller has them already.
        """
        if adopted is None:
            customers = sorted({e.customer_id for e in events})
            adopted = await identity_store.adopted_runs(conn or self._pool, customers)
        by_customer: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_customer[event.customer_id].append(event)
        semaphore = asyncio.Semaphore(ROUTE_CONCURRENCY)
        routed: list[str] = []
        failed: list[tuple[str, str, bool]] = []

        refused: list[tuple[str, RunRefusedError]] = []

        async def one_customer(queue: list[Event]) -> None:
            async with semaphore:
                for event in queue:
                    try:
                        with metrics.timed(metrics.ROUTING_SECONDS):
                            await self.route(event, adopted.get(event.customer_id, {}))
                    except RunRefusedError as exc:
                        # One run refused it (too many signals, too large, gone): a dead letter, not an outage.
                        log.warning(
                            "event.dead_lettered",
                            event_id=event.event_id,
                            reason=exc.reason,
                            workflow_id=exc.workflow_id,
                        )
                        refused.append((event.event_id, exc))
                        continue  # the customer's later events do not wait behind a dead letter
                    except Exception as exc:  # the event stays in the outbox, the drainer retries it after a backoff
                        # Temporal unreachable (or an unknown failure, such as a client that cannot connect): new
                        # events go straight to the outbox until the drainer gets through again.
                        self._degraded = True
                        log.warning("event.route_failed", event_id=event.event_id, error=repr(exc))
                        failed.append((event.event_id, repr(exc), meaning(exc) in (Meaning.UNAVAILABLE, None)))
                        return  # this customer's later events wait behind this one
                    routed.append(event.event_id)

        await asyncio.gather(*(one_customer(q) for q in by_customer.values()))
        async with connection(conn or self._pool) as marking:
            await self._mark(marking, routed, failed, refused)
        return set(routed)

    @staticmethod
    async def _mark(
        conn: Connection,
        routed: list[str],
        failed: list[tuple[str, str, bool]],
        refused: list[tuple[str, RunRefusedError]],
    ) -> None:
        await event_store.mark_routed(conn, routed)
        for event_id, error, unavailable in failed:
            # Backoff per event: Temporal down is the drainer's own backoff; an error of this event waits longer.
            attempts = await event_store.mark_route_failed(
                conn,
                event_id,
                error,
                backoff_seconds=EVENT_BACKOFF_SECONDS,
                max_backoff_seconds=DRAIN_MAX_BACKOFF_SECONDS if unavailable else EVENT_MAX_BACKOFF_SECONDS,
            )
            if not unavailable and attempts >= MAX_ROUTE_ATTEMPTS:
                await event_store.dead_letter(conn, event_id, None, "failing", error)
                metrics.DEAD_LETTERS.labels(reason="failing").inc()
        for event_id, exc in refused:
            await event_store.dead_letter(conn, event_id, exc.workflow_id, exc.reason, exc.detail)
            metrics.DEAD_LETTERS.labels(reason=metrics.reason_code(exc.reason)).inc()

    # --- dead letters -----------------------------------------------------------------------------------

    async def retry_dead_letter(self, event_id: str) -> EventOutcome | None:
        """Put a dead letter back in the outbox and route it now; None if ``event_id`` is no dead letter."""
        event = await event_store.revive(self._pool, event_id)
        if event is None:
            return None
        routed = await self.route_stored([event])
        return EventOutcome(event.event_id, "accepted", event.event_id in routed, event.customer_id)

    async def route(self, event: Event, adopted: dict[str, str] | None = None) -> RouteResult:
        """Deliver one event to every journey it triggers or that listens to it.

        ``adopted``: journey id -> workflow id of the runs the customer adopted in a merge (looked up if None).

        Raises:
            TemporalUnavailableError: Temporal did not answer; retry later.
        """
        if adopted is None:
            adopted = (await identity_store.adopted_runs(self._pool, [event.customer_id])).get(event.customer_id, {})
        adopted = dict(adopted)
        result = RouteResult()
        triggered: set[str] = set()
        for journey in await self._active():
            definition = journey.definition
            if journey.status != "active" or definition.trigger.event != event.name:
                continue
            if definition.trigger.where is not None and not definition.trigger.where.evaluate(event.properties):
                continue
            entry = await admission.enter(
                self._pool,
                self._runs,
                definition,
                journey.version,
                event,
                self.now(),
                adopted=adopted.get(journey.journey_id),
            )
            if entry.outcome == "refused":
                # Not a new entry; if the journey also listens to this event, a running customer still gets it.
                result.refused.append(entry.workflow_id)
                continue
            triggered.add(journey.journey_id)
            result.started.append(entry.workflow_id)
        for journey_id, names in self._listeners.items():
            if journey_id in triggered or event.name not in names:
                continue
            adopted_wid = adopted.get(journey_id)
            if adopted_wid is not None:
                if await self._runs.signal(adopted_wid, EVENT_SIGNAL, event):
                    result.signalled.append(adopted_wid)
                    continue
                await identity_store.forget_adopted(self._pool, event.customer_id, journey_id, adopted_wid)
            wid = workflow_id(journey_id, event.customer_id)
            if await self._runs.signal(wid, EVENT_SIGNAL, event):
                result.signalled.append(wid)
            # else: no running customer of this journey, nothing to do
        return result

    # --- merges -----------------------------------------------------------------------------------------

    async def notify_merge(self, merge: dict[str, Any], conn: Connection | None = None) -> dict[str, Any]:
        """``orchestration.merges.notify_merge`` with this router's pool and Temporal policy.

        Raises:
            TemporalUnavailableError: Temporal did not answer; the drainer retries.
        """
        return await merges.notify_merge(self._pool, self._runs, merge, conn)

    async def notify_merges(self, merges: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Inline after ``identify``: tell the runs now; what fails is left to the drainer.

        Answers the merge log rows as they are now (a row whose runs could not be told yet is still pending).
        """
        out = []
        for merge in merges:
            if merge["notified_at"] is None:
                try:
                    merge = await self.notify_merge(merge)
                except Exception as exc:  # the merge is committed; the drainer tells the runs later
                    self._degraded = True
                    self._wake.set()
                    log.warning("identity.notify_failed", merge_id=merge["id"], error=repr(exc))
            out.append(merge)
        return out

    @staticmethod
    def now() -> datetime:
        """The time of an entry, for the re-entry policy (tests may replace it)."""
        return datetime.now(UTC)

    # --- the outbox drainer -----------------------------------------------------------------------------

    async def drain_once(self, *, min_age: timedelta = INLINE_GRACE) -> tuple[int, int]:
        """Tell the runs of pending merges, then route one batch of unrouted events; returns ``(routed, failed)``."""
        told, failed_merges = await self._drain_merges(min_age)
        routed, failed = await self._drain_events(min_age)
        return routed + told, failed + failed_merges

    async def _drain_merges(self, min_age: timedelta) -> tuple[int, int]:
        async with self._pool.acquire() as conn, conn.transaction():
            pending = await identity_store.pending_notifications(
                conn, DRAIN_BATCH, min_age_seconds=min_age.total_seconds()
            )
            for index, merge in enumerate(pending):
                try:
                    await self.notify_merge(merge, conn)
                except Exception as exc:  # Temporal down: the rest waits for the next round
                    log.warning("identity.notify_failed", merge_id=merge["id"], error=repr(exc))
                    return index, len(pending) - index
        return len(pending), 0

    async def _drain_events(self, min_age: timedelta) -> tuple[int, int]:
        async with self._pool.acquire() as conn, conn.transaction():
            # The row locks keep another process's drainer off these events while we route them.
            batch = await event_store.unrouted(conn, DRAIN_BATCH, min_age=min_age, lock=True)
            if not batch:
                return 0, 0
            routed = await self._route_many(batch, conn)
        return len(routed), len(batch) - len(routed)

    async def drain(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: route unrouted events, backing off (with jitter) while Temporal fails."""
        backoff = DRAIN_IDLE_SECONDS
        while not stop.is_set():
            try:
                routed, failed = await self.drain_once(min_age=timedelta(0) if self._degraded else INLINE_GRACE)
            except Exception as exc:  # PostgreSQL down, a bug: log and try again later
                log.warning("events.drain_failed", error=repr(exc))
                routed, failed = 0, 1
            if failed:
                backoff = min(backoff * 2, DRAIN_MAX_BACKOFF_SECONDS)
                delay = backoff * random.uniform(0.5, 1.0)
            else:
                if routed:
                    log.info("events.drained", routed=routed)
                    self._degraded = False
                    continue  # there may be more
                # Nothing due says nothing about Temporal: failed events may be waiting out their backoff. Stay
                # degraded (new events go to the outbox) until a routed event shows Temporal answers again.
                backoff = DRAIN_IDLE_SECONDS
                delay = DRAIN_IDLE_SECONDS
            self._wake.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
