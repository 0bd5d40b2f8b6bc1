"""``parcours dev --demo``'s population: the named segment that gives the console's broadcast form an audience."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from devstack.demo import DEMO_SEGMENT, create_population
from journeys.models import Audience
from store import segments as segment_store


class _Router:
    """Takes the demo's events without Temporal (routing them is the router's own tests' business)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def ingest(self, events: list[Any]) -> None:
        self.events.extend(events)

    async def notify_merges(self, merges: Any) -> None:
        return None


async def test_the_demo_has_a_segment_of_its_pro_customers_and_keeps_an_edit_of_it(pool: asyncpg.Pool) -> None:
    await pool.execute("DELETE FROM segments WHERE id = $1", DEMO_SEGMENT)
    ids = await create_population(pool, _Router(), 6)
    row = await segment_store.get_segment(pool, DEMO_SEGMENT)
    assert row is not None
    audience = Audience.model_validate(row.definition)
    pro = {
        c for c in ids if (await pool.fetchval("SELECT attributes->>'plan' FROM customers WHERE id = $1", c)) == "pro"
    }
    assert len(pro) == 3
    members = await segment_store.member_page(pool, audience, datetime.now(UTC), after=None, limit=100_000)
    assert set(members) & set(ids) == pro
    assert await segment_store.count_members(pool, audience, datetime.now(UTC)) == len(members)

    # Run again (the next `parcours dev --demo` on the same data): a segment the user changed stays as they left it.
    mine = Audience.model_validate({"where": [{"field": "profile.plan", "op": "eq", "value": "free"}]})
    await segment_store.put_segment(pool, DEMO_SEGMENT, mine)
    await create_population(pool, _Router(), 6)
    again = await segment_store.get_segment(pool, DEMO_SEGMENT)
    assert again is not None and Audience.model_validate(again.definition) == mine
