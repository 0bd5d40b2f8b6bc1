"""Export works for an id with events but no profile, and explains each message's channel decision."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from contracts.journey import Event
from store import events as event_store
from tests.support.stack import API_KEY, make_settings


async def test_export_of_an_id_with_events_and_messages_but_no_profile(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    customer = f"noprofile-{uuid.uuid4().hex[:10]}"
    await event_store.store_events(
        pool, [Event(event_id=f"e-{customer}", customer_id=customer, name="viewed", occurred_at=datetime.now(UTC))]
    )
    choice = {"chosen": "email", "order": ["sms", "email"], "refused": {"sms": "no_consent:sms"}}
    await pool.execute(
        "INSERT INTO messages (idempotency_key, journey_id, journey_version, step_id, customer_id, entry_id, channel,"
        " kind, status, choice) VALUES ($1, 'j', 1, 'nudge', $2, 'e', 'email', 'marketing', 'skipped', $3)",
        f"j:{customer}:e:nudge",
        customer,
        choice,
    )
    app = create_app(make_settings(), pool=pool, client=time_skipping_env.client)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"X-API-Key": API_KEY}
    ) as api:
        exported = await api.get(f"/v1/customers/{customer}/export")
        unknown = await api.get(f"/v1/customers/nobody-{uuid.uuid4().hex[:10]}/export")
    assert exported.status_code == 200, exported.text
    document = exported.json()
    assert document["profile"] is None
    assert [e["event_id"] for e in document["events"]] == [f"e-{customer}"]
    [message] = document["messages"]
    assert message["choice"] == choice
    assert unknown.status_code == 404
