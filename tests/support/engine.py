"""A running journey engine for tests: a worker with the real activities, PostgreSQL and SMTP sink.

``Engine.enter(...)`` starts a journey for a customer exactly as the router does (a start with the
trigger event), so what the tests see is what production does.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.journey import JourneyActivities
from config.settings import Settings
from contracts.journey import Event
from journeys import Journey, load_journey_file, parse_journey
from orchestration.runs import enter_journey
from store import journeys as journey_store
from tests.support.mail import SmtpSink
from tests.support.temporal import task_queue
from workers.worker import build_worker, channels_for

EXAMPLES = Path(__file__).parent.parent.parent / "journeys" / "examples"
HISTORIES = Path(__file__).parent.parent / "histories"


def example(name: str, *, unique: bool = True) -> Journey:
    """An example journey; with ``unique`` its id gets a suffix so tests sharing the database stay apart."""
    journey = load_journey_file(EXAMPLES / f"{name}.yaml")
    if unique:
        journey = journey.model_copy(update={"id": f"{journey.id}-{uuid.uuid4().hex[:8]}"})
    return journey


def journey_from(definition: dict[str, Any]) -> Journey:
    definition = {**definition, "id": f"{definition['id']}-{uuid.uuid4().hex[:8]}"}
    return parse_journey(definition)


async def publish_waiting_journey(pool: asyncpg.Pool, reentry: str = "always") -> tuple[Journey, int]:
    """Publish journey ``orch``: triggered by ``go``, its one step waits a day (so its runs stay running)."""
    journey = journey_from(
        {
            "id": "orch",
            "name": "Orchestration",
            "trigger": {"event": "go"},
            "entry": {"reentry": reentry},
            "steps": [{"id": "nap", "type": "wait", "duration": "1d"}],
        }
    )
    version, _ = await journey_store.publish(pool, journey)
    return journey, version


def event(customer_id: str, name: str, properties: dict[str, Any] | None = None, event_id: str | None = None) -> Event:
    return Event(
        event_id=event_id or f"ev-{uuid.uuid4().hex}",
        customer_id=customer_id,
        name=name,
        properties=properties or {},
        occurred_at=datetime.now(UTC),
    )


async def make_customer(
    pool: asyncpg.Pool,
    *,
    email: bool = True,
    phone: bool = False,
    push: bool = False,
    consent: tuple[str, ...] = ("email",),
    attributes: dict[str, Any] | None = None,
    locale: str | None = None,
) -> str:
    """A customer with the given addresses and channel consent granted; returns the id."""
    customer_id = f"cust-{uuid.uuid4().hex[:12]}"
    attrs = dict(attributes or {}, first_name="Ada")
    if push:
        attrs["push_token"] = f"device-{customer_id}"
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO customers (id, email, phone, timezone, locale, attributes)"
            " VALUES ($1, $2, $3, 'Europe/Paris', $4, $5)",
            customer_id,
            f"{customer_id}@example.com" if email else None,
            "+33600000000" if phone else None,
            locale,
            attrs,
        )
        for channel in consent:
            await set_consent(conn, customer_id, "channel", channel, "granted")
    return customer_id


def where_tag(tag: str) -> dict[str, Any]:
    """A segment's conditions: the customers whose attribute ``tag`` is ``tag`` (``consenting_customers``)."""
    return {"where": [{"field": "profile.tag", "op": "eq", "value": tag}]}


async def consenting_customers(pool: asyncpg.Pool, ids: list[str], tag: str) -> None:
    """Customers ``ids``, each with the address ``<id>@example.com``, email consent and the attribute ``tag`` (to
    segment on), in two statements however many there are."""
    await pool.execute(
        "INSERT INTO customers (id, email, attributes) "
        "SELECT c, c || '@example.com', jsonb_build_object('tag', $2::text) FROM unnest($1::text[]) c",
        ids,
        tag,
    )
    await pool.execute(
        "INSERT INTO consent_events (customer_id, scope, name, status, source) "
        "SELECT c, 'channel', 'email', 'granted', 'test' FROM unnest($1::text[]) c",
        ids,
    )


async def set_consent(db: Any, customer_id: str, scope: str, name: str, status: str) -> None:
    await db.execute(
        "INSERT INTO consent_events (customer_id, scope, name, status, source) VALUES ($1, $2, $3, $4, 'test')",
        customer_id,
        scope,
        name,
        status,
    )


@dataclass
class Engine:
    env: WorkflowEnvironment
    settings: Settings
    pool: asyncpg.Pool
    smtp: SmtpSink

    @property
    def client(self) -> Client:
        return self.env.client

    async def enter(
        self, journey: Journey, customer_id: str, properties: dict[str, Any] | None = None
    ) -> WorkflowHandle:
        trigger = event(customer_id, journey.trigger.event, properties)
        entered = await enter_journey(
            self.client, journey, 1, trigger, task_queue=self.settings.task_queue, default_timezone="Europe/Paris"
        )
        return entered.handle

    async def messages(self, customer_id: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM messages WHERE customer_id = $1 ORDER BY created_at, id", customer_id
        )

    def mail_to(self, customer_id: str) -> list[Any]:
        return [m.message for m in self.smtp.messages if f"{customer_id}@example.com" in m.rcpt_tos]

    async def outcomes(self, customer_id: str) -> dict[str, str]:
        rows = await self.pool.fetch(
            "SELECT step_id, outcome FROM step_outcomes WHERE customer_id = $1 ORDER BY id", customer_id
        )
        return {r["step_id"]: r["outcome"] for r in rows}

    async def save_history(self, handle: WorkflowHandle, name: str) -> None:
        await save_history(handle, name)


async def save_history(handle: WorkflowHandle, name: str) -> None:
    """Keep the run's history for the replay corpus when PARCOURS_RECORD_HISTORIES=1."""
    path = HISTORIES / f"{name}.json"
    # Never overwrite: a recorded history stands for the customers running that release; give a new name.
    if os.environ.get("PARCOURS_RECORD_HISTORIES") == "1" and not path.exists():
        history = await handle.fetch_history()
        path.write_text(history.to_json())


def engine_settings(smtp: SmtpSink, **overrides: Any) -> Settings:
    return Settings(
        smtp_host=smtp.host, smtp_port=smtp.port, task_queue=task_queue(), consent_default="opt_in", **overrides
    )


@contextlib.asynccontextmanager
async def running_engine(
    env: WorkflowEnvironment, pool: asyncpg.Pool, smtp: SmtpSink, **overrides: Any
) -> AsyncIterator[Engine]:
    """A worker with these settings on a fresh task queue, for as long as the block runs."""
    settings = engine_settings(smtp, **overrides)
    async with channels_for(settings, pool) as channels, build_worker(env.client, settings, pool, channels):
        yield Engine(env, settings, pool, smtp)


@pytest_asyncio.fixture(loop_scope="session")
async def engine(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> AsyncIterator[Engine]:
    async with running_engine(time_skipping_env, pool, smtp_sink) as engine:
        yield engine


__all__ = [
    "Engine",
    "JourneyActivities",
    "engine",
    "engine_settings",
    "event",
    "example",
    "make_customer",
    "running_engine",
]
