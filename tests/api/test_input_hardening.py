"""Hostile values at every entry of the API answer a 4xx naming the field, never a 5xx (issue 11, class 1, 5, 7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from tests.support.stack import make_settings, unique

KEY = {"X-API-Key": "test-key"}


@pytest_asyncio.fixture
async def http(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(), pool=pool, client=time_skipping_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=KEY) as client:
        yield client


def _event(**overrides: Any) -> str:
    """An event as raw JSON text, so values no JSON encoder would write (NaN, lone surrogates) can be sent."""
    fields = {"customer_id": '"c-1"', "name": '"viewed"', **overrides}
    return "{" + ", ".join(f'"{name}": {value}' for name, value in fields.items()) + "}"


def _raw(client: httpx.AsyncClient, method: str, url: str, body: str, **headers: str) -> Any:
    return client.request(method, url, content=body.encode(), headers={"content-type": "application/json", **headers})


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ('{"total": NaN}', "properties.total"),
        ('{"total": Infinity}', "properties.total"),
        ('{"total": -1e999}', "properties.total"),
        ('{"n": ' + "7" * 5000 + "}", "properties.n"),
        ('{"name": "\\ud800"}', "properties.name"),
        ('{"name": "a\\u0000b"}', "properties.name"),
        ("[" * 40 + "]" * 40, "properties" + "[0]" * 31),
    ],
)
async def test_event_values_no_store_can_take_are_invalid_naming_the_field(
    http: httpx.AsyncClient, properties: str, field: str
) -> None:
    response = await _raw(http, "POST", "/v1/events", _event(properties=properties))
    assert response.status_code == 202, response.text
    [result] = response.json()["results"]
    assert result["status"] == "invalid"
    assert result["error"]["field"] == field


async def test_in_a_batch_only_the_hostile_event_is_refused(http: httpx.AsyncClient) -> None:
    customer = unique("c")
    good = _event(customer_id=f'"{customer}"')
    body = '{"events": [' + good + ", " + _event(customer_id=f'"{customer}"', properties='{"x": NaN}') + "]}"
    response = await _raw(http, "POST", "/v1/events", body)
    assert response.status_code == 202, response.text
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "invalid"]
    assert response.json()["results"][1]["error"]["field"] == "properties.x"


@pytest.mark.parametrize(
    "occurred_at",
    [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59.999999-00:01",
        "0999-12-31T00:00:00Z",
    ],
)
async def test_date_times_at_the_calendar_edges_are_invalid(http: httpx.AsyncClient, occurred_at: str) -> None:
    response = await _raw(http, "POST", "/v1/events", _event(occurred_at=f'"{occurred_at}"'))
    [result] = response.json()["results"]
    assert (response.status_code, result["status"], result["error"]["field"]) == (202, "invalid", "occurred_at")


async def test_event_properties_over_the_size_limit_are_invalid(http: httpx.AsyncClient) -> None:
    properties = '{"blob": "' + "x" * 70_000 + '"}'
    response = await _raw(http, "POST", "/v1/events", _event(properties=properties))
    [result] = response.json()["results"]
    assert result["error"]["field"] == "properties"
    assert "PARCOURS_MAX_PROPERTIES_BYTES" in result["error"]["message"]


async def test_whole_body_problems_are_4xx_naming_the_body(http: httpx.AsyncClient) -> None:
    deep = await _raw(http, "POST", "/v1/events", "[" * 200_000 + "]" * 200_000)
    assert deep.status_code in (413, 422)
    nested = await _raw(http, "PUT", "/v1/customers/c-1", '{"attributes": ' + '{"a": ' * 40 + "1" + "}" * 41)
    assert nested.status_code == 422 and nested.json()["error"]["field"].startswith("attributes.a.a")
    not_utf8 = await http.request("POST", "/v1/events", content=b'{"name": "\xff"}')
    assert (not_utf8.status_code, not_utf8.json()["error"]["field"]) == (400, "body")


async def test_a_very_long_time_zone_is_422_not_503(http: httpx.AsyncClient) -> None:
    for zone in ["A" * 5000, "Europe/" + "x" * 300, "../../etc/passwd", "Europe/Paris\u0000"]:
        response = await http.put("/v1/customers/c-tz", json={"timezone": zone})
        assert response.status_code == 422, (zone[:20], response.text)
        assert response.json()["error"]["field"] == "timezone"


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.com\r\nBcc: victim@example.org",
        "ada@example.com, eve@example.org",
        "ada@example.com\nX-Injected: 1",
        "Ada <ada@example.com>",
        "ada@@example.com",
    ],
)
async def test_email_addresses_with_header_injection_or_two_recipients_are_refused(
    http: httpx.AsyncClient, address: str
) -> None:
    profile = await http.put("/v1/customers/c-mail", json={"email": address})
    assert (profile.status_code, profile.json()["error"]["field"]) == (422, "email")
    suppression = await http.post("/v1/suppressions", json={"channel": "email", "address": address})
    assert suppression.status_code == 422
    bounce = await http.post("/v1/providers/generic/events", json={"type": "hard_bounce", "address": address})
    assert (bounce.status_code, bounce.json()["error"]["field"]) == (422, "address")
    alias = await http.post(
        "/v1/identify", json={"customer_id": "c-mail", "aliases": [{"kind": "email", "value": address}]}
    )
    assert alias.status_code == 422


async def test_phone_numbers_are_stored_as_e164(http: httpx.AsyncClient) -> None:
    customer = unique("c")
    ok = await http.put(f"/v1/customers/{customer}", json={"phone": "+33 6 12 34 56 78"})
    assert (ok.status_code, ok.json()["phone"]) == (200, "+33612345678")
    for bad in ["0612345678", "+1", "+33 6 12 34 56 78 90 12 34", "+33\r\n612345678"]:
        response = await http.put(f"/v1/customers/{customer}", json={"phone": bad})
        assert (response.status_code, response.json()["error"]["field"]) == (422, "phone"), bad


async def test_nul_in_query_strings_and_paths_is_refused_naming_the_parameter(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/suppressions?channel=email&address=a%00b@example.com")
    assert (response.status_code, response.json()["error"]["field"]) == (400, "address")
    response = await http.get("/v1/customers/c%00x")
    assert (response.status_code, response.json()["error"]["field"]) == (422, "customer_id")


async def test_huge_integers_in_query_strings_and_paths_are_422(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/suppressions?before=" + "9" * 4000)
    assert (response.status_code, response.json()["error"]["field"]) == (422, "before")
    response = await http.get("/v1/suppressions?before=" + "9" * 5000)  # longer than any parameter
    assert (response.status_code, response.json()["error"]["field"]) == (400, "before")
    response = await http.post("/v1/customers/c-1/inbox/" + "9" * 30 + "/read")
    assert (response.status_code, response.json()["error"]["field"]) == (422, "message_id")


async def test_hostile_journeys_are_422_naming_step_and_field(http: httpx.AsyncClient) -> None:
    nan = '{"id": "j-nan", "name": "n", "trigger": {"event": "e"}, "steps": [{"id": "s", "type": "wait", "duration": '
    nan += "NaN}]}"
    response = await _raw(http, "POST", "/v1/journeys", nan)
    assert (response.status_code, response.json()["error"]["field"]) == (422, "steps[0].duration")
    overflow = {
        "id": "j-o",
        "name": "o",
        "trigger": {"event": "e"},
        "steps": [{"id": "s", "type": "wait", "duration": 1e300}],
    }
    response = await http.post("/v1/journeys", json=overflow)
    assert (response.status_code, response.json()["error"]["field"]) == (422, "steps[0] (id 's').duration")
    bomb = "id: j-bomb\nname: b\nx: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for level in "bcdefghij":
        bomb += f"{level}: &{level} [" + ", ".join([f"*{chr(ord(level) - 1)}"] * 9) + "]\n"
    response = await http.post("/v1/journeys", content=bomb, headers={"content-type": "application/yaml"})
    assert response.status_code == 422 and "aliases" in response.json()["error"]["message"]


async def test_consent_and_topic_text_with_nul_is_422(http: httpx.AsyncClient) -> None:
    response = await http.put("/v1/customers/c-1/consent", json={"channels": {"email": "granted"}, "source": "a\u0000"})
    assert (response.status_code, response.json()["error"]["field"]) == (422, "source")


async def test_a_provider_notification_wrapping_hostile_json_is_422_naming_the_inner_field(
    http: httpx.AsyncClient,
) -> None:
    inner = (
        '{"notificationType": "Bounce", "bounce": {"bounceType": "Permanent", "bounceSubType": NaN,'
        ' "bouncedRecipients": [{"emailAddress": "ada@example.com"}]}}'
    )
    response = await http.post("/v1/providers/ses/events", json={"Type": "Notification", "Message": inner})
    assert (response.status_code, response.json()["error"]["field"]) == (422, "Message.bounce.bounceSubType")
    wrapped = await http.post(
        "/v1/providers/ses/events",
        json={"Type": "Notification", "Message": inner.replace("NaN", '"x\\u0000"')},
    )
    assert (wrapped.status_code, wrapped.json()["error"]["field"]) == (422, "Message.bounce.bounceSubType")
