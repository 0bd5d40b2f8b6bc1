"""Routing behaviour events to journeys, with the events table as the outbox.

``ingest`` stores events idempotently, then routes the newly stored ones at once. Routing is what DESIGN.md
describes: for a journey the event triggers, signal-with-start the workflow ``{journey}:{customer}`` (running:
it is just signalled) once the journey's re-entry policy allows it (``store.entries.claim_entry``, recorded
before the call); for a journey that listens to the event, signal the running workflow (none: nothing to
do). If Temporal cannot be reached, the events stay unrouted and the caller still gets "accepted": ``drain``
retries them with backoff, and also picks up events a crashed process left unrouted.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import structlog
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from config.settings import Settings
from journeys.models import Journey
from journeys.runtime import EVENT_SIGNAL, Event, workflow_id
from store import entries as entry_store
from store import events as event_store
from store import journeys as journey_store
from workflows.entry import enter_journey, was_started

log = structlog.get_logger(__name__)

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


class TemporalUnavailableError(RuntimeError):
    """Routing failed for a reason that retrying later can fix (Temporal unreachable, timeout, overloaded)."""


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
    status: Literal["accepted", "duplicate"]
    routed: bool
    """False: stored and queued, the drainer routes it when Temporal answers."""


class EventRouter:
    def __init__(self, pool: asyncpg.Pool, client: Client, settings: Settings) -> None:
        self._pool = pool
        self._client = client
        self._settings = settings
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

    async def ingest(self, events: list[Event]) -> list[EventOutcome]:
        """Store ``events`` idempotently and route the new ones; a Temporal failure is not the caller's error."""
        async with self._pool.acquire() as conn:
            fresh = await event_store.store_events(conn, events)
        new = [e for e, is_new in zip(events, fresh, strict=True) if is_new]
        routed: set[str] = set()
        if new and not self._degraded:
            routed = await self._route_many(new)
            if len(routed) < len(new):
                self._wake.set()
        return [
            EventOutcome(e.event_id, "accepted" if is_new else "duplicate", is_new and e.event_id in routed)
            for e, is_new in zip(events, fresh, strict=True)
        ]

    async def _route_many(self, events: list[Event], conn: Any = None) -> set[str]:
        """Route ``events`` (in order per customer) and mark the outcome; return the ids routed.

        ``conn``: where to record outcomes (the drainer's transaction, which holds the rows' locks).
        """
        by_customer: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_customer[event.customer_id].append(event)
        semaphore = asyncio.Semaphore(ROUTE_CONCURRENCY)
        routed: list[str] = []
        failed: list[tuple[str, str]] = []

        async def one_customer(queue: list[Event]) -> None:
            async with semaphore:
                for event in queue:
                    try:
                        await self.route(event)
                    except Exception as exc:  # anything: the event stays in the outbox, the drainer retries
                        self._degraded = True
                        log.warning("event.route_failed", event_id=event.event_id, error=repr(exc))
                        failed.append((event.event_id, repr(exc)))
                        return  # this customer's later events wait behind this one
                    routed.append(event.event_id)

        await asyncio.gather(*(one_customer(q) for q in by_customer.values()))
        if conn is None:
            async with self._pool.acquire() as own:
                await self._mark(own, routed, failed)
        else:
            await self._mark(conn, routed, failed)
        return set(routed)

    @staticmethod
    async def _mark(conn: Any, routed: list[str], failed: list[tuple[str, str]]) -> None:
        await event_store.mark_routed(conn, routed)
        for event_id, error in failed:
            await event_store.mark_route_failed(conn, event_id, error)

    async def route(self, event: Event) -> RouteResult:
        """Deliver one event to every journey it triggers or that listens to it.

        Raises:
            TemporalUnavailableError: Temporal did not answer; retry later.
        """
        result = RouteResult()
        triggered: set[str] = set()
        for journey in await self._active():
            definition = journey.definition
            if journey.status != "active" or definition.trigger.event != event.name:
                continue
            if definition.trigger.where is not None and not definition.trigger.where.evaluate(event.properties):
                continue
            wid = workflow_id(journey.journey_id, event.customer_id)
            claim = await entry_store.claim_entry(
                self._pool,
                journey.journey_id,
                event.customer_id,
                event.event_id,
                journey.version,
                definition.entry,
                self.now(),
            )
            if not claim:
                # Not a new entry; if the journey also listens to this event, a running customer still gets it.
                result.refused.append(wid)
                continue
            handle = await self._call(self._start(journey, event, wid))
            if claim.new and await was_started(self._client, handle) is False:
                # The customer is in the journey right now: the event only reached the running run.
                await entry_store.release_entry(self._pool, journey.journey_id, event.customer_id, event.event_id)
            triggered.add(journey.journey_id)
            result.started.append(wid)
        for journey_id, names in self._listeners.items():
            if journey_id in triggered or event.name not in names:
                continue
            wid = workflow_id(journey_id, event.customer_id)
            handle = self._client.get_workflow_handle(wid)
            try:
                await self._call(handle.signal(EVENT_SIGNAL, event, rpc_timeout=RPC_TIMEOUT))
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    continue  # no running customer of this journey: nothing to do
                raise
            result.signalled.append(wid)
        return result

    @staticmethod
    def now() -> datetime:
        """The time of an entry, for the re-entry policy (tests may replace it)."""
        return datetime.now(UTC)

    async def _start(self, journey: ActiveJourney, event: Event, wid: str) -> Any:
        return await enter_journey(
            self._client,
            journey.definition,
            journey.version,
            event,
            task_queue=self._settings.task_queue,
            default_timezone=self._settings.default_timezone,
            rpc_timeout=RPC_TIMEOUT,
        )

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        """Await a Temporal call; errors that a later retry can fix become TemporalUnavailableError."""
        try:
            return await asyncio.wait_for(awaitable, RPC_TIMEOUT.total_seconds() * 2)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise
            raise TemporalUnavailableError(f"{exc.status.name if exc.status else 'RPC'}: {exc.message}") from exc
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise TemporalUnavailableError(repr(exc)) from exc

    # --- the outbox drainer -----------------------------------------------------------------------------

    async def drain_once(self, *, min_age: timedelta = INLINE_GRACE) -> tuple[int, int]:
        """Route one batch of unrouted events; returns ``(routed, failed)``."""
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
                self._degraded = False
                backoff = DRAIN_IDLE_SECONDS
                delay = DRAIN_IDLE_SECONDS
            self._wake.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
