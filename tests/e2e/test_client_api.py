"""``parcours_client`` against the real API served by uvicorn on 127.0.0.1: what it sends is what the API takes.

The client's own behaviour (batches, retries, errors) is tested in its distribution, clients/python/tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from parcours_client import ParcoursClient, ParcoursClientError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from store import customers as customer_store
from store import events as event_store
from tests.support.mail import free_port
from tests.support.stack import API_KEY, make_settings, serving

pytestmark = pytest.mark.devserver


@pytest_asyncio.fixture
async def served(dev_env: WorkflowEnvironment, pool: asyncpg.Pool) -> AsyncIterator[str]:
    """The API's URL."""
    async with serving(create_app(make_settings(), pool=pool, client=dev_env.client), free_port()) as url:
        yield url


def fast_client(url: str, key: str = API_KEY, **kwargs: Any) -> ParcoursClient:
    return ParcoursClient(url, key, backoff_initial=0.05, backoff_max=0.2, timeout=5, **kwargs)


async def test_identify_and_track_in_batches(served: str, pool: asyncpg.Pool) -> None:
    customer_id = f"client-{uuid.uuid4().hex[:10]}"

    def use_client() -> list[str]:
        with fast_client(served, batch_size=3) as parcours:
            answer = parcours.identify(customer_id, email="c@example.com", attributes={"plan": "pro"})
            assert answer["profile"]["id"] == customer_id and answer["created"] is True
            ids = [parcours.track(customer_id, "viewed", {"n": n}) for n in range(5)]
            assert parcours.pending == 2  # the first 3 went out as a full batch
        assert [r["status"] for r in parcours.results] == ["accepted"] * 5
        return ids

    ids = await asyncio.to_thread(use_client)
    profile = await customer_store.get_customer(pool, customer_id)
    assert profile is not None and profile.attributes == {"plan": "pro"}
    for event_id in ids:
        stored = await event_store.get_event(pool, event_id)
        assert stored is not None and stored["customer_id"] == customer_id


async def test_a_visitor_tracked_anonymously_then_identified(served: str, pool: asyncpg.Pool) -> None:
    tag = uuid.uuid4().hex[:10]
    visitor, customer_id = f"device-{tag}", f"client-{tag}"

    def use_client() -> tuple[list[str], dict[str, Any]]:
        with fast_client(served) as parcours:
            ids = [parcours.track(None, "viewed", {"n": n}, anonymous_id=visitor) for n in range(2)]
            answer = parcours.identify(
                customer_id, anonymous_ids=[visitor], aliases={"email": f"{tag}@example.com"}, source="signup"
            )
            ids.append(parcours.track(None, "viewed", {"n": 2}, anonymous_id=visitor))
        return ids, answer

    ids, answer = await asyncio.to_thread(use_client)
    # The queued events went out before the identify call, so the merge moved them.
    assert [(m["alias_kind"], m["moved"].get("events")) for m in answer["merges"]] == [
        ("anonymous_id", 2),
        ("email", None),
    ]
    for event_id in ids:
        stored = await event_store.get_event(pool, event_id)
        assert stored is not None and (stored["customer_id"], stored["anonymous_id"]) == (customer_id, visitor)


async def test_the_api_refusals_name_their_field(served: str) -> None:
    parcours = fast_client(served, key="wrong")
    parcours.track("c-1", "clicked")
    with pytest.raises(ParcoursClientError) as info:
        await asyncio.to_thread(parcours.flush)
    assert info.value.status == 401 and info.value.field == "authorization"
    with pytest.raises(ParcoursClientError) as info:
        await asyncio.to_thread(fast_client(served).identify, "c-1", timezone="Nowhere/Land")
    assert info.value.status == 422 and info.value.field == "traits.timezone"
