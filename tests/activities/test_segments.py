"""A journey's ``entry.segment`` naming a saved segment: each firing reads the segment as it is then."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
from temporalio.testing import WorkflowEnvironment

from activities.segment_models import SegmentPageRequest
from activities.segments import SegmentActivities
from config.settings import Settings
from journeys import parse_journey
from journeys.models import Audience
from store import journeys as journey_store
from store import segments as segment_store
from tests.support.engine import make_customer


async def test_a_journey_segment_by_ref_follows_the_saved_segment(
    pool: asyncpg.Pool, time_skipping_env: WorkflowEnvironment
) -> None:
    cohort = uuid.uuid4().hex[:8]
    fr = await make_customer(pool, attributes={"cohort": cohort, "country": "FR"})
    be = await make_customer(pool, attributes={"cohort": cohort, "country": "BE"})
    segment_id = f"seg-{cohort}"

    def where(*countries: str) -> Audience:
        return Audience.model_validate(
            {
                "where": [
                    {"field": "profile.cohort", "op": "eq", "value": cohort},
                    {"field": "profile.country", "op": "in", "value": list(countries)},
                ]
            }
        )

    await segment_store.put_segment(pool, segment_id, where("FR"))
    journey = parse_journey(
        {
            "id": f"by-ref-{cohort}",
            "name": "By ref",
            "entry": {"segment": {"ref": segment_id, "every": "1d"}},
            "steps": [{"id": "hi", "type": "send", "channel": "email", "template": {"subject": "s", "text": "t"}}],
        }
    )
    await journey_store.publish(pool, journey)
    activities = SegmentActivities(pool, time_skipping_env.client, Settings())
    request = SegmentPageRequest(journey_id=journey.id, after=None, now=datetime.now(UTC))

    assert (await activities.segment_members(request)).customer_ids == [fr]
    await segment_store.put_segment(pool, segment_id, where("FR", "BE"))
    assert (await activities.segment_members(request)).customer_ids == sorted([fr, be])
    await segment_store.delete_segment(pool, segment_id)
    page = await activities.segment_members(request)
    assert page.customer_ids == [] and page.stopped == f"unknown segment '{segment_id}'"
