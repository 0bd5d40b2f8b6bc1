"""Named segments over HTTP (api.routes_segments): a journey cannot be published naming a segment that does not
exist, and a segment a journey or an unfinished broadcast uses cannot be deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.stack import Stack, stack_fixture, unique  # noqa: F401  (registers the fixture)

pytestmark = pytest.mark.devserver


def segment_journey(segment_id: str) -> dict[str, Any]:
    return {
        "id": unique("by-segment"),
        "name": "By segment",
        "entry": {"segment": {"ref": segment_id, "every": "1d"}},
        "steps": [{"id": "hi", "type": "send", "channel": "email", "template": {"subject": "s", "text": "t"}}],
    }


async def test_a_journey_naming_an_unknown_segment_is_refused(stack: Stack) -> None:
    journey = segment_journey(unique("missing"))
    response = await stack.http.post("/v1/journeys", json=journey)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "entry.segment.ref"
    assert (await stack.http.get(f"/v1/journeys/{journey['id']}")).status_code == 404


async def test_a_segment_in_use_cannot_be_deleted_until_its_users_are_done(stack: Stack) -> None:
    segment_id = unique("seg")
    where = {"where": [{"field": "profile.tag", "op": "eq", "value": segment_id}]}
    assert (await stack.http.put(f"/v1/segments/{segment_id}", json=where)).status_code == 201
    journey = segment_journey(segment_id)
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201, journey
    broadcast = {
        "segment": {"ref": segment_id},
        "channel": "email",
        "template": {"subject": "Later", "text": "t"},
        "send_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
    }
    created = await stack.http.post("/v1/broadcasts", json=broadcast)
    assert created.status_code == 201, created.text
    broadcast_id = created.json()["id"]

    refused = await stack.http.delete(f"/v1/segments/{segment_id}")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["field"] == "segment_id"
    assert error["used_by"] == [{"kind": "broadcast", "id": broadcast_id}, {"kind": "journey", "id": journey["id"]}]
    assert journey["id"] in error["message"] and broadcast_id in error["message"]
    assert (await stack.http.get(f"/v1/segments/{segment_id}")).status_code == 200

    assert (await stack.http.post(f"/v1/broadcasts/{broadcast_id}/cancel")).status_code == 200
    still = await stack.http.delete(f"/v1/segments/{segment_id}")
    assert still.status_code == 409 and still.json()["error"]["used_by"] == [{"kind": "journey", "id": journey["id"]}]
    assert (await stack.http.post(f"/v1/journeys/{journey['id']}/archive")).status_code == 200
    assert (await stack.http.delete(f"/v1/segments/{segment_id}")).status_code == 204
    assert (await stack.http.get(f"/v1/segments/{segment_id}")).status_code == 404
