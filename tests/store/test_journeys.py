"""Publishing journey versions (store.journeys.publish): an author's expected version is checked under the row's
lock, so two authors who started from one version cannot both publish."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from api.publishing import validated
from journeys.models import Journey
from journeys.values import DEFAULT_LIMITS
from store import journeys as journey_store
from tests.support.engine import EXAMPLES


def _cart(journey_id: str, duration: str) -> Journey:
    text = (EXAMPLES / "abandoned-cart.yaml").read_text()
    text = text.replace("id: abandoned-cart", f"id: {journey_id}", 1).replace("duration: 1h", f"duration: {duration}")
    return validated(text, "yaml", DEFAULT_LIMITS, 10)


async def test_two_authors_from_one_version_one_publishes_the_other_is_refused(pool: asyncpg.Pool) -> None:
    journey_id = f"cart-{uuid.uuid4().hex[:8]}"
    assert await journey_store.publish(pool, _cart(journey_id, "1h"), expected=0) == (1, True)
    results = await asyncio.gather(
        journey_store.publish(pool, _cart(journey_id, "2h"), expected=1),
        journey_store.publish(pool, _cart(journey_id, "3h"), expected=1),
        return_exceptions=True,
    )
    published = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, journey_store.VersionConflict)]
    assert published == [(2, True)] and len(refused) == 1, results
    assert (refused[0].expected, refused[0].latest) == (1, 2)
    versions = await journey_store.list_versions(pool, journey_id)
    assert sorted(v.version for v in versions) == [1, 2]  # the refused one wrote nothing
    row = await journey_store.get_journey(pool, journey_id)
    assert row is not None and row.latest_version == 2
    winner = "2h" if results[0] == (2, True) else "3h"
    assert row.definition is not None and row.definition["steps"][0]["duration"] == winner


async def test_a_new_journey_expected_at_version_0_is_refused_once_it_exists(pool: asyncpg.Pool) -> None:
    journey_id = f"cart-{uuid.uuid4().hex[:8]}"
    assert await journey_store.publish(pool, _cart(journey_id, "1h")) == (1, True)
    with pytest.raises(journey_store.VersionConflict):
        await journey_store.publish(pool, _cart(journey_id, "5h"), expected=0)
    assert [v.version for v in await journey_store.list_versions(pool, journey_id)] == [1]
    # Without an expected version, publishing works as before.
    assert await journey_store.publish(pool, _cart(journey_id, "5h")) == (2, True)
