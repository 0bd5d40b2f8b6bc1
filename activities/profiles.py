"""The customer as activities read them: profile with consent, and the context Liquid templates see."""

from __future__ import annotations

from typing import Any

from activities.models import Profile
from contracts.journey import Event
from store import customers as customer_store
from store.db import Db


async def fetch_profile(db: Db, customer_id: str) -> Profile:
    """The profile with its current consent; ``exists=False`` for an unknown customer.

    Pass a connection to read both on one connection (two statements).
    """
    customer = await customer_store.get_customer(db, customer_id)
    if customer is None:
        return Profile(customer_id=customer_id, exists=False)
    return profile_of(customer, await customer_store.consent_of(db, customer_id))


def profile_of(customer: customer_store.Customer, consent: list[customer_store.Consent]) -> Profile:
    """The profile activities and templates see, from the customer's row and current consent."""
    return Profile(
        customer_id=customer.id,
        email=customer.email,
        phone=customer.phone,
        timezone=customer.timezone,
        locale=customer.locale,
        attributes=customer.attributes,
        values=customer.values or {},
        channel_consent={c.name: c.status for c in consent if c.scope == "channel"},
        topic_consent={c.name: c.status for c in consent if c.scope == "topic"},
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
