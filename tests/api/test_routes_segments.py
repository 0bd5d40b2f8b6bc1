"""Named segments over HTTP (api.routes_segments): a journey cannot be published naming a segment that does not
exist, and a segment a journey or an unfinished broadcast uses cannot be deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.engine import where_tag
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


async def _customer(stack: Stack, tag: str) -> str:
    customer_id = unique("cust")
    response = await stack.http.put(f"/v1/customers/{customer_id}", json={"attributes": {"tag": tag}})
    assert response.status_code == 200, response.text
    return customer_id


async def test_an_exact_count_is_kept_and_max_age_answers_it_while_fresh_enough(stack: Stack) -> None:
    tag, segment_id = unique("tag"), unique("seg")
    first = await _customer(stack, tag)
    where = where_tag(tag)
    assert (await stack.http.put(f"/v1/segments/{segment_id}", json=where)).status_code == 201
    counted = (await stack.http.get(f"/v1/segments/{segment_id}/count")).json()
    assert (counted["count"], counted["stored"], counted["sample"]) == (1, False, [first])
    assert counted["counted_at"] >= counted["exact_as_of"]

    second = await _customer(stack, tag)
    # Fresh enough: the kept count, honestly dated, without counting the new member.
    kept = (await stack.http.get(f"/v1/segments/{segment_id}/count", params={"max_age": 3600})).json()
    assert (kept["count"], kept["stored"], kept["sample"]) == (1, True, [first])
    assert (kept["exact_as_of"], kept["counted_at"]) == (counted["exact_as_of"], counted["counted_at"])
    assert kept["age_seconds"] >= 0
    # Too old for max_age=0: counted again, and that count is kept in its place.
    recounted = (await stack.http.get(f"/v1/segments/{segment_id}/count", params={"max_age": 0})).json()
    assert (recounted["count"], recounted["stored"]) == (2, False)
    assert recounted["sample"] == sorted([first, second])
    assert recounted["exact_as_of"] > counted["exact_as_of"]
    kept = (await stack.http.get(f"/v1/segments/{segment_id}/count", params={"max_age": 3600, "sample": 1})).json()
    assert (kept["count"], kept["stored"], kept["exact_as_of"]) == (2, True, recounted["exact_as_of"])
    assert kept["sample"] == sorted([first, second])[:1]
    # Without max_age the count is exact, always (the documented behaviour).
    exact = (await stack.http.get(f"/v1/segments/{segment_id}/count")).json()
    assert (exact["count"], exact["stored"]) == (2, False)


async def test_a_changed_definition_never_answers_the_old_count(stack: Stack) -> None:
    tag, other, segment_id = unique("tag"), unique("tag"), unique("seg")
    await _customer(stack, tag)
    only = await _customer(stack, other)
    by_tag = where_tag(tag)
    assert (await stack.http.put(f"/v1/segments/{segment_id}", json=by_tag)).status_code == 201
    assert (await stack.http.get(f"/v1/segments/{segment_id}/count")).json()["count"] == 1

    by_other = {"where": [{"field": "profile.tag", "op": "in", "value": [other]}]}
    assert (await stack.http.put(f"/v1/segments/{segment_id}", json=by_other)).status_code == 200
    answer = (await stack.http.get(f"/v1/segments/{segment_id}/count", params={"max_age": 86_400})).json()
    assert (answer["count"], answer["stored"], answer["sample"]) == (1, False, [only])

    # Back to the first definition: its count was replaced by the second's, so it is counted again too.
    assert (await stack.http.put(f"/v1/segments/{segment_id}", json=by_tag)).status_code == 200
    answer = (await stack.http.get(f"/v1/segments/{segment_id}/count", params={"max_age": 86_400})).json()
    assert answer["stored"] is False and answer["count"] == 1
    # The same definition stored again (an idempotent PUT) keeps its count.
    assert (await stack.http.put(f"/v1/segments/{segment_id}", json=by_tag)).status_code == 200
    assert (await stack.http.get(f"/v1/segments/{segment_id}/count", params={"max_age": 86_400})).json()["stored"]


@pytest.mark.parametrize("max_age", ["-1", "soon", "1.5", "99999999999", ""])
async def test_a_bad_max_age_is_a_422_naming_it(stack: Stack, max_age: str) -> None:
    segment_id = unique("seg")
    assert (await stack.http.put(f"/v1/segments/{segment_id}", json={})).status_code == 201
    response = await stack.http.get(f"/v1/segments/{segment_id}/count", params={"max_age": max_age})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "max_age"
