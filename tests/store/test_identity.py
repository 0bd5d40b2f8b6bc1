"""Profile merges (store.identity): which side's field wins when a visitor becomes a known customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from store.identity import merge_fields

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(fields: dict[str, Any], attributes: dict[str, Any], meta: dict[str, tuple[int, bool]]) -> dict[str, Any]:
    """A profile row whose field ``name`` was written ``meta[name][0]`` hours after T0, explicitly or not."""
    return {
        **fields,
        "attributes": attributes,
        "updated_at": T0,
        "field_meta": {
            name: {"at": (T0 + timedelta(hours=hours)).isoformat(), "explicit": explicit}
            for name, (hours, explicit) in meta.items()
        },
    }


def test_merge_rules_newer_wins_unless_the_customer_set_it_explicitly() -> None:
    customer = row(
        {"email": "ada@example.com", "locale": None},
        {"colour": "blue", "plan": "free", "city": "Paris"},
        {
            "email": (1, False),
            "attributes.colour": (1, True),
            "attributes.plan": (1, False),
            "attributes.city": (9, False),
        },
    )
    visitor = row(
        {"email": "old@example.com", "locale": "fr"},
        {"colour": "red", "plan": "pro", "city": "Lyon", "referrer": "ads"},
        {
            "email": (0, False),
            "locale": (2, False),
            "attributes.colour": (5, False),
            "attributes.plan": (5, False),
            "attributes.city": (5, True),
            "attributes.referrer": (5, False),
        },
    )
    merged = merge_fields(customer, visitor)
    # Explicit on the customer's side: kept although the visitor's is newer.
    assert "attributes.colour" in merged.kept and "colour" not in merged.attributes
    # Newer wins: the visitor's plan; the customer's city (newer, even against an explicit older value); their email.
    assert merged.attributes == {"plan": "pro", "referrer": "ads"}
    assert sorted(merged.kept) == ["attributes.city", "attributes.colour", "email"]
    # Missing on the customer: taken, with its stamp, so a later merge still knows how old it is.
    assert merged.columns == {"locale": "fr"}
    assert merged.meta["locale"] == {"at": (T0 + timedelta(hours=2)).isoformat(), "explicit": False}
