"""Suppressions by hand (api.routes_suppressions): an operator suppresses an address, lists it, lifts it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.stack import API_KEY, Stack, eventually, stack_fixture, unique  # noqa: F401  (registers the fixture)

pytestmark = pytest.mark.devserver


async def test_an_operator_suppresses_an_address_by_hand_and_lifts_it(stack: Stack) -> None:
    customer_id = await stack.customer()
    address = f"{customer_id}@example.com"
    added = await stack.http.post(
        "/v1/suppressions",
        json={"channel": "email", "address": address.upper(), "note": "legal request #42", "actor": "ops:grace"},
    )
    assert added.status_code == 201, added.text
    row = added.json()
    assert (row["address"], row["reason"], row["source"]) == (address, "manual", "api")
    assert row["detail"] == {"note": "legal request #42", "actor": "ops:grace"}
    again = await stack.http.post("/v1/suppressions", json={"channel": "email", "address": address})
    assert (again.status_code, again.json()["id"]) == (200, row["id"])
    listed = await stack.http.get("/v1/suppressions", params={"channel": "email", "address": address.title()})
    assert [r["id"] for r in listed.json()] == [row["id"]]

    journey = stack.journey()
    await stack.publish(journey)
    await stack.trigger(customer_id, journey)
    skipped = await stack.message(customer_id, journey["id"])
    assert (skipped["status"], skipped["reason"]) == ("skipped", "suppressed:manual")
    # A decision about the address, not the customer's: their consent is untouched.
    history = (await stack.http.get(f"/v1/customers/{customer_id}/consent/history")).json()["items"]
    assert [(h["name"], h["status"]) for h in history] == [("email", "granted")]

    lifted = await stack.http.delete("/v1/suppressions", params={"channel": "email", "address": address})
    assert lifted.status_code == 200 and lifted.json()["id"] == row["id"]
    second = stack.journey()
    await stack.publish(second)
    await stack.trigger(customer_id, second)
    sent = await stack.message(customer_id, second["id"])
    assert sent["status"] == "sent"
    gone = await stack.http.delete("/v1/suppressions", params={"channel": "email", "address": address})
    assert (gone.status_code, gone.json()["error"]["field"]) == (404, "address")


@pytest.mark.parametrize(
    ("method", "kwargs", "field"),
    [
        ("POST", {"json": {"channel": "fax", "address": "a@example.com"}}, "channel"),
        ("POST", {"json": {"channel": "email", "address": "not-an-address"}}, "address"),
        ("POST", {"json": {"channel": "sms", "address": "call me"}}, "address"),
        ("POST", {"json": {"channel": "email", "address": "a@example.com", "why": "x"}}, "why"),
        ("GET", {"params": {"address": "a@example.com"}}, "channel"),
        ("DELETE", {"params": {"channel": "email", "address": "nope"}}, "address"),
    ],
)
async def test_bad_suppression_input_is_a_422_naming_the_field(
    stack: Stack, method: str, kwargs: dict[str, Any], field: str
) -> None:
    response = await stack.http.request(method, "/v1/suppressions", **kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
