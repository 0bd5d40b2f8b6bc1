"""Segment membership in SQL (store.segments): the translation of conditions agrees with the Python evaluator."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import asyncpg

from activities.models import Profile
from journeys.conditions import ConditionGroup
from journeys.models import Audience
from store import segments as segment_store
from tests.support.engine import where_tag

PROFILES: list[dict[str, Any]] = [
    {"email": "a@x.io", "attributes": {"country": "FR", "orders": 3, "tags": ["vip", "eu"], "plan": {"tier": "gold"}}},
    {"email": None, "attributes": {"country": "BE", "orders": "12", "tags": [], "plan": {"tier": "silver"}}},
    {"email": "c@y.io", "locale": "fr-FR", "attributes": {"country": "DE", "orders": 0.5, "note": None}},
    {"email": None, "attributes": {"email": "attr@z.io", "orders": "many", "name": "Zoé"}},
    {"email": "e@x.io", "attributes": {"country": "fr", "orders": True, "tags": "vip-ish", "10": 10}},
]

CONDITIONS: list[Any] = [
    [{"field": "profile.country", "op": "in", "value": ["FR", "BE"]}],
    [{"field": "profile.country", "op": "not_in", "value": ["FR", "BE"]}],
    [{"field": "profile.country", "op": "ne", "value": "FR"}],
    [{"field": "profile.orders", "op": "gt", "value": 2}],
    [{"field": "profile.orders", "op": "lte", "value": "3"}],
    [{"field": "profile.orders", "op": "eq", "value": 12}],
    [{"field": "profile.orders", "op": "gte", "value": "m"}],
    [{"field": "profile.tags", "op": "contains", "value": "vip"}],
    [{"field": "profile.email", "op": "starts_with", "value": "a"}],
    [{"field": "profile.email", "op": "exists"}],
    [{"field": "profile.note", "op": "not_exists"}],
    [{"field": "profile.note", "op": "eq", "value": None}],
    [{"field": "profile.plan.tier", "op": "eq", "value": "gold"}],
    [{"field": "profile.attributes.plan.tier", "op": "ne", "value": "gold"}],
    [{"field": "profile.plan", "op": "contains", "value": "tier"}],
    [{"field": "profile.locale", "op": "starts_with", "value": "fr"}],
    [{"field": "profile.name", "op": "lt", "value": "Zz"}],
    [{"field": "profile.10", "op": "eq", "value": "10"}],
    {
        "any": [
            {"field": "profile.country", "op": "eq", "value": "DE"},
            {"all": [{"field": "profile.orders", "op": "exists"}, {"field": "profile.country", "op": "not_exists"}]},
        ]
    },
]


async def test_sql_translation_agrees_with_the_python_evaluator(pool: asyncpg.Pool) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [f"seg-{tag}-{i}" for i in range(len(PROFILES))]
    profiles = {}
    for customer_id, profile in zip(ids, PROFILES, strict=True):
        await pool.execute(
            "INSERT INTO customers (id, email, locale, attributes) VALUES ($1, $2, $3, $4)",
            customer_id,
            profile["email"],
            profile.get("locale"),
            profile["attributes"],
        )
        profiles[customer_id] = Profile(
            customer_id=customer_id,
            email=profile["email"],
            locale=profile.get("locale"),
            attributes=profile["attributes"],
        ).as_condition_data()
    for raw in CONDITIONS:
        group = ConditionGroup.model_validate(raw)
        expected = {c for c, data in profiles.items() if group.evaluate({"profile": data})}
        p = segment_store.Params(ids)
        sql = segment_store.condition_sql(group, segment_store.profile_value(p), p)
        rows = await pool.fetch(f"SELECT c.id FROM customers c WHERE c.id = ANY($1) AND {sql}", *p.values)
        assert {r["id"] for r in rows} == expected, raw


async def test_a_count_of_a_definition_changed_meanwhile_is_not_kept(pool: asyncpg.Pool) -> None:
    tag = uuid.uuid4().hex[:8]
    segment_id = f"seg-{tag}"
    await pool.execute("INSERT INTO customers (id, attributes) VALUES ($1, $2)", f"c-{tag}", {"tag": tag})
    before, _ = await segment_store.put_segment(pool, segment_id, Audience.model_validate(where_tag(tag)))
    counted = await segment_store.count_segment(pool, before)
    assert (counted.members, counted.sample) == (1, [f"c-{tag}"])
    assert await segment_store.stored_count(pool, before) == counted

    # The definition changes while an earlier count is still running: that count is not kept for it.
    after, _ = await segment_store.put_segment(
        pool, segment_id, Audience.model_validate({"where": [{"field": "profile.tag", "op": "ne", "value": tag}]})
    )
    assert await segment_store.stored_count(pool, after) is None
    assert await segment_store.record_count(pool, before, counted) is False
    assert await segment_store.stored_count(pool, after) is None
    # A count older than the one kept does not replace it.
    newer = await segment_store.count_segment(pool, after)
    older = dataclasses.replace(newer, members=0, exact_as_of=counted.exact_as_of)
    assert await segment_store.record_count(pool, after, older) is False
    assert await segment_store.stored_count(pool, after) == newer
    # Deleting the segment deletes its count.
    assert await segment_store.delete_segment(pool, segment_id)
    assert await pool.fetchval("SELECT count(*) FROM segment_counts WHERE segment_id = $1", segment_id) == 0


def test_the_checksum_of_a_definition_ignores_key_order() -> None:
    one = {"where": {"all": [{"field": "profile.a", "op": "eq", "value": 1}]}, "events": []}
    other = {"events": [], "where": {"all": [{"value": 1, "op": "eq", "field": "profile.a"}]}}
    assert segment_store.definition_checksum(one) == segment_store.definition_checksum(other)
    changed = {"where": {"all": [{"field": "profile.a", "op": "eq", "value": 2}]}, "events": []}
    assert segment_store.definition_checksum(one) != segment_store.definition_checksum(changed)
