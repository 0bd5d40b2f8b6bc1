"""Topics and a customer's preferences, stored where the send policy reads them.

- channel and topic subscriptions: the consent ledger, through ``store.customers.record_consents`` (which takes
  the customer's row lock, so a change lands before or after an in-flight send, never in between);
- frequency (``frequency_cap``), quiet hours (``quiet_hours``), preferred channel (``preferred_channel``) and
  interests (``interests``): profile attributes;
- time zone and language: the ``customers.timezone`` / ``locale`` columns.

The send activity reads all of them in its own transaction, so a change counts for the very next send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asyncpg import Record

from config.settings import Settings
from store import customers as customer_store
from store.db import Db, Pool, transaction

CONSENT_CHANNELS = ("email", "sms", "push")
FREQUENCIES = ("daily", "weekly", "monthly", "none")

_TOPIC_COLUMNS = "name, label, description, default_status, updated_at"


# --- topics ------------------------------------------------------------------------------------------------


def _topic_row(row: Record) -> dict[str, Any]:
    return {
        "name": row["name"],
        "label": row["label"],
        "description": row["description"],
        "default": row["default_status"],
        "source": "api",
    }


async def topic_defaults(db: Db) -> dict[str, str]:
    """Topics defined through the API: name -> ``opt_in`` | ``opt_out`` (they win over ``settings.topics``)."""
    rows = await db.fetch("SELECT name, default_status FROM topics")
    return {r["name"]: r["default_status"] for r in rows}


async def list_topics(db: Db, settings: Settings) -> list[dict[str, Any]]:
    """Every topic, the API's definitions over the settings', by name."""
    merged = {
        t.name: {
            "name": t.name,
            "label": t.label,
            "description": t.description,
            "default": t.default,
            "source": "settings",
        }
        for t in settings.topics
    }
    for row in await db.fetch(f"SELECT {_TOPIC_COLUMNS} FROM topics"):
        merged[row["name"]] = _topic_row(row)
    return [merged[name] for name in sorted(merged)]


async def get_topic(db: Db, settings: Settings, name: str) -> dict[str, Any] | None:
    row = await db.fetchrow(f"SELECT {_TOPIC_COLUMNS} FROM topics WHERE name = $1", name)
    if row is not None:
        return _topic_row(row)
    for t in settings.topics:
        if t.name == name:
            return {
                "name": t.name,
                "label": t.label,
                "description": t.description,
                "default": t.default,
                "source": "settings",
            }
    return None


async def put_topic(db: Db, name: str, *, label: str, description: str, default: str) -> dict[str, Any]:
    row = await db.fetchrow(
        f"""INSERT INTO topics (name, label, description, default_status) VALUES ($1, $2, $3, $4)
            ON CONFLICT (name) DO UPDATE SET label = EXCLUDED.label, description = EXCLUDED.description,
                   default_status = EXCLUDED.default_status, updated_at = now()
        RETURNING {_TOPIC_COLUMNS}""",
        name,
        label,
        description,
        default,
    )
    assert row is not None  # INSERT ... RETURNING always returns the row
    return _topic_row(row)


# --- a customer's preferences ------------------------------------------------------------------------------


@dataclass
class Preferences:
    """What the preference page shows and saves. ``channels``/``topics``: subscribed or not (effective state)."""

    channels: dict[str, bool] = field(default_factory=dict)
    topics: dict[str, bool] = field(default_factory=dict)
    frequency: str = "none"
    quiet_hours: str | None = None
    preferred_channel: str | None = None
    timezone: str | None = None
    locale: str | None = None
    interests: list[str] = field(default_factory=list)


@dataclass
class CustomerPreferences:
    customer_id: str
    email: str | None
    preferences: Preferences
    topics: list[dict[str, Any]]


def _effective(status: str | None, default: str) -> bool:
    return status == "granted" or (status is None and default == "opt_out")


async def load_preferences(db: Db, settings: Settings, customer_id: str) -> CustomerPreferences | None:
    """The customer's current preferences (None: no such customer)."""
    row = await customer_store.get_customer(db, customer_id)
    if row is None:
        return None
    consent = await customer_store.current_consent(db, customer_id)
    topics = await list_topics(db, settings)
    attributes = row.attributes
    frequency = attributes.get("frequency_cap")
    interests = attributes.get("interests")
    prefs = Preferences(
        channels={c: _effective(consent["channels"].get(c), settings.consent_default) for c in CONSENT_CHANNELS},
        topics={t["name"]: _effective(consent["topics"].get(t["name"]), t["default"]) for t in topics},
        frequency=frequency if isinstance(frequency, str) and frequency in FREQUENCIES else "none",
        quiet_hours=attributes.get("quiet_hours") if isinstance(attributes.get("quiet_hours"), str) else None,
        preferred_channel=attributes.get("preferred_channel") or None,
        timezone=row.timezone,
        locale=row.locale,
        interests=[str(i) for i in interests] if isinstance(interests, list) else [],
    )
    return CustomerPreferences(customer_id, row.email, prefs, topics)


async def save_preferences(
    pool: Pool, settings: Settings, customer_id: str, wanted: Preferences, *, source: str = "preference_page"
) -> None:
    """Store ``wanted`` in one transaction under the customer's row lock.

    Only real changes reach the consent ledger (a box left as it was appends nothing).

    Raises:
        customer_store.UnknownCustomerError: no such customer.
    """
    async with transaction(pool) as conn:
        row = await conn.fetchrow("SELECT id FROM customers WHERE id = $1 FOR UPDATE", customer_id)
        if row is None:
            raise customer_store.UnknownCustomerError(customer_id)
        current = await load_preferences(conn, settings, customer_id)
        assert current is not None
        defaults = {t["name"]: t["default"] for t in current.topics}
        changes: list[Any] = [
            ("channel", name, "granted" if on else "withdrawn")
            for name, on in wanted.channels.items()
            if name in current.preferences.channels and current.preferences.channels[name] != on
        ]
        changes += [
            ("topic", name, "granted" if on else "withdrawn")
            for name, on in wanted.topics.items()
            if name in defaults and current.preferences.topics.get(name) != on
        ]
        await customer_store.record_consents(conn, customer_id, changes, source=source)
        set_attributes: dict[str, Any] = {"interests": wanted.interests}
        removed: list[str] = []
        for key, value in (
            ("frequency_cap", None if wanted.frequency == "none" else wanted.frequency),
            ("quiet_hours", wanted.quiet_hours),
            ("preferred_channel", wanted.preferred_channel),
        ):
            if value is None:
                removed.append(key)
            else:
                set_attributes[key] = value
        # What the customer states on the page is explicit: a later merge keeps it (store.identity).
        stamped = customer_store.written_fields(
            {"timezone": wanted.timezone, "locale": wanted.locale}, {**set_attributes, **dict.fromkeys(removed)}
        )
        await conn.execute(
            f"""UPDATE customers
                  SET attributes = (attributes - $2::text[]) || $3::jsonb,
                      timezone = $4, locale = $5, updated_at = now(),
                      field_meta = field_meta || {customer_store.field_stamps_sql("$6", "true")}
                WHERE id = $1""",
            customer_id,
            removed,
            set_attributes,
            wanted.timezone,
            wanted.locale,
            stamped,
        )
