"""The customer as activities read them: profile with consent, and the context Liquid templates see."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from activities.models import Profile
from contracts.journey import Event

PROFILE_SQL = "SELECT id, email, phone, timezone, locale, attributes FROM customers WHERE id = $1"
CONSENT_SQL = "SELECT scope, name, status FROM consent_current WHERE customer_id = $1"


async def fetch_profile(conn: Any, customer_id: str) -> Profile:
    """The profile with its current consent; ``exists=False`` for an unknown customer."""
    row = await conn.fetchrow(PROFILE_SQL, customer_id)
    if row is None:
        return Profile(customer_id=customer_id, exists=False)
    return profile_from_rows(row, await conn.fetch(CONSENT_SQL, customer_id))


def profile_from_rows(row: asyncpg.Record, consent: list[asyncpg.Record]) -> Profile:
    attributes = row["attributes"]
    if isinstance(attributes, str):
        attributes = json.loads(attributes)
    return Profile(
        customer_id=row["id"],
        email=row["email"],
        phone=row["phone"],
        timezone=row["timezone"],
        locale=row["locale"],
        attributes=attributes or {},
        channel_consent={r["name"]: r["status"] for r in consent if r["scope"] == "channel"},
        topic_consent={r["name"]: r["status"] for r in consent if r["scope"] == "topic"},
    )


def liquid_context(
    profile: Profile, trigger: Event, journey_id: str, journey_name: str, step_id: str
) -> dict[str, Any]:
    """What every template sees: ``customer`` (alias ``profile``), the trigger ``event`` and the ``journey``."""
    customer = profile.as_condition_data()
    event = {
        **trigger.properties,
        "id": trigger.event_id,
        "name": trigger.name,
        "occurred_at": trigger.occurred_at.isoformat(),
        "properties": trigger.properties,
    }
    journey = {"id": journey_id, "name": journey_name, "step": step_id}
    return {"customer": customer, "profile": customer, "event": event, "journey": journey}
