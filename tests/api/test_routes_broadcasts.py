"""Named segments, broadcasts, previews and test sends over HTTP, on the real stack (dev server, PostgreSQL, worker,
SMTP sink)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.engine import where_tag
from tests.support.stack import Stack, eventually, stack_fixture  # noqa: F401  (registers the fixture)

pytestmark = pytest.mark.devserver


async def tagged_customer(stack: Stack, tag: str, *, consent: str = "granted", **attributes: Any) -> str:
    customer_id = f"cust-{uuid.uuid4().hex[:10]}"
    response = await stack.http.put(
        f"/v1/customers/{customer_id}",
        json={"email": f"{customer_id}@example.com", "attributes": {"tag": tag, "first_name": "Ada", **attributes}},
    )
    assert response.status_code == 200, response.text
    response = await stack.http.put(f"/v1/customers/{customer_id}/consent", json={"channels": {"email": consent}})
    assert response.status_code == 200, response.text
    return customer_id


async def test_named_segment_crud_count_and_sample(stack: Stack) -> None:
    tag = uuid.uuid4().hex
    members = sorted([await tagged_customer(stack, tag) for _ in range(3)])
    segment_id = f"vip-{uuid.uuid4().hex[:8]}"

    response = await stack.http.put(f"/v1/segments/{segment_id}", json=where_tag(tag))
    assert response.status_code == 201, response.text
    response = await stack.http.put(f"/v1/segments/{segment_id}", json=where_tag(tag))
    assert response.status_code == 200
    assert (await stack.http.get(f"/v1/segments/{segment_id}")).json()["where"]["all"][0]["value"] == tag

    counted = (await stack.http.get(f"/v1/segments/{segment_id}/count", params={"sample": 2})).json()
    assert counted["count"] == 3 and counted["sample"] == members[:2] and counted["milliseconds"] >= 0

    bad = await stack.http.put(f"/v1/segments/{segment_id}", json={"where": [{"field": "trigger.x", "op": "eq"}]})
    assert bad.status_code == 422 and "profile." in bad.json()["error"]["message"]
    assert (await stack.http.delete(f"/v1/segments/{segment_id}")).status_code == 204
    missing = await stack.http.get(f"/v1/segments/{segment_id}/count")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "segment_id"


async def test_broadcast_over_http_sends_once_to_each_consenting_member(stack: Stack) -> None:
    tag = uuid.uuid4().hex
    yes = [await tagged_customer(stack, tag) for _ in range(3)]
    no = await tagged_customer(stack, tag, consent="withdrawn")
    segment_id = f"seg-{uuid.uuid4().hex[:8]}"
    assert (await stack.http.put(f"/v1/segments/{segment_id}", json=where_tag(tag))).status_code == 201

    body = {
        "name": "Launch",
        "segment": {"ref": segment_id},
        "channel": "email",
        "template": {"subject": "Hello {{ customer.first_name }}", "text": "News"},
    }
    response = await stack.http.post("/v1/broadcasts", json=body)
    assert response.status_code == 201, response.text
    broadcast_id = response.json()["id"]

    async def done() -> dict[str, Any]:
        view = (await stack.http.get(f"/v1/broadcasts/{broadcast_id}")).json()
        assert view["status"] == "completed", view
        return view

    view = await eventually(done, timeout=30)
    assert view["audience"] == 4
    assert view["progress"]["by_status"] == {"sent": 3, "skipped": 1}
    assert view["report"]["sent"] == 3
    mail = await stack.smtp.wait_for(3, timeout=10)
    assert sorted(r for m in mail for r in m.rcpt_tos) == sorted(f"{c}@example.com" for c in yes)
    assert all(m.message["Subject"] == "Hello Ada" for m in mail)
    assert f"{no}@example.com" not in {r for m in stack.smtp.messages for r in m.rcpt_tos}

    # Nothing to pause any more; the same id cannot be created twice; bad input names its field.
    assert (await stack.http.post(f"/v1/broadcasts/{broadcast_id}/pause")).json()["status"] == "completed"
    again = await stack.http.post("/v1/broadcasts", json={**body, "id": broadcast_id})
    assert again.status_code == 409 and again.json()["error"]["field"] == "id"
    wrong = await stack.http.post("/v1/broadcasts", json={**body, "send_at": {"local": "tomorrow"}})
    assert wrong.status_code == 422 and wrong.json()["error"]["field"].startswith("send_at")
    liquid = await stack.http.post(
        "/v1/broadcasts", json={**body, "template": {"subject": "{{ x | nope }}", "text": "t"}}
    )
    assert liquid.status_code == 422 and "template error" in liquid.json()["error"]["message"]
    unknown = await stack.http.post("/v1/broadcasts", json={**body, "segment": {"ref": "nope-" + tag[:8]}})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "segment.ref"
    assert (await stack.http.post("/v1/broadcasts/nope/cancel")).status_code == 404


async def test_journey_preview_renders_the_customers_data_and_the_policy_decision(stack: Stack) -> None:
    journey = stack.journey()
    journey["steps"][0]["template"] = {
        "subject": "{{ customer.first_name }}, {{ event.item_count }} item(s) wait",
        "text": "Cart worth {{ event.cart_value }}",
        "locales": {"fr": {"subject": "{{ customer.first_name }}, {{ event.item_count }} article(s)"}},
    }
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    tag = uuid.uuid4().hex
    ada = await tagged_customer(stack, tag)
    await stack.http.put(f"/v1/customers/{ada}", json={"locale": "fr-FR", "attributes": {"first_name": "Adèle"}})
    gone = await tagged_customer(stack, tag, consent="withdrawn")
    event = {"properties": {"item_count": 2, "cart_value": 89.9}}

    response = await stack.http.post(
        f"/v1/journeys/{journey['id']}/preview", json={"step": "hello", "customer_id": ada, "event": event}
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["channels"]["email"]["subject"] == "Adèle, 2 article(s)"
    assert preview["channels"]["email"]["text"] == "Cart worth 89.9"
    assert preview["decision"]["verdict"] == "send" and preview["decision"]["summary"] == "would send on email"

    skipped = (
        await stack.http.post(f"/v1/journeys/{journey['id']}/preview", json={"step": "hello", "customer_id": gone})
    ).json()
    assert skipped["decision"]["summary"] == "would skip because consent_withdrawn:email"
    assert await stack.pool.fetchval("SELECT count(*) FROM messages WHERE customer_id = ANY($1)", [ada, gone]) == 0

    not_send = await stack.http.post(
        f"/v1/journeys/{journey['id']}/preview", json={"step": "await-done", "customer_id": ada}
    )
    assert not_send.status_code == 422 and not_send.json()["error"]["field"] == "step"
    nobody = await stack.http.post(f"/v1/journeys/{journey['id']}/preview", json={"step": "hello", "customer_id": "x"})
    assert nobody.status_code == 404 and nobody.json()["error"]["field"] == "customer_id"


async def test_preview_names_the_variables_that_rendered_empty_per_channel(stack: Stack) -> None:
    journey = stack.journey()
    journey["steps"][0]["template"] = {
        "subject": "{{ customer.first_name }}, your cart worth {{ event.cart_value }} EUR is waiting",
        "text": "{{ customer.nickname | default: 'Hello' }}{% if event.coupon %} {{ event.coupon }}{% endif %}",
        "html": "<p>{{ customer.last_name }} {{ event.cart_value }}</p>",
    }
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    ada = await tagged_customer(stack, uuid.uuid4().hex)
    url = f"/v1/journeys/{journey['id']}/preview"

    bare = (await stack.http.post(url, json={"step": "hello", "customer_id": ada})).json()
    assert bare["channels"]["email"]["subject"] == "Ada, your cart worth  EUR is waiting"
    # A default or an `if` is the author's own fallback: only what rendered empty is named, once each.
    assert bare["missing"] == {"email": ["customer.last_name", "event.cart_value"]}

    given = {"properties": {"cart_value": 42}}
    full = (await stack.http.post(url, json={"step": "hello", "customer_id": ada, "event": given})).json()
    assert full["channels"]["email"]["subject"] == "Ada, your cart worth 42 EUR is waiting"
    assert full["missing"] == {"email": ["customer.last_name"]}

    # The broadcast preview says the same, per channel of its list.
    broadcast = {
        "segment": where_tag("x"),
        "channels": ["push", "email"],
        "content": {
            "push": {"title": "Hi {{ customer.first_name }}", "body": "{{ customer.city }}"},
            "email": {"subject": "Hi {{ customer.first_name }}", "text": "t"},
        },
    }
    shown = await stack.http.post("/v1/broadcasts/preview", json={"broadcast": broadcast, "customer_id": ada})
    assert shown.status_code == 200, shown.text
    assert shown.json()["missing"] == {"push": ["customer.city"], "email": []}

    schema = (await stack.http.get("/openapi.json")).json()["components"]["schemas"]["Preview"]
    assert "rendered as an empty string" in schema["properties"]["missing"]["description"]
    # Sending is unchanged: the message goes out with the blank, as before.
    sent = await stack.http.post(
        url.replace("preview", "test-send"), json={"step": "hello", "customer_id": ada, "to": "qa@example.org"}
    )
    assert sent.status_code == 200 and sent.json()["status"] == "sent"
    [mail] = await stack.smtp.wait_for(1, timeout=10)
    assert mail.message["Subject"] == "[TEST] Ada, your cart worth  EUR is waiting"


async def test_test_send_reaches_the_given_address_and_counts_nowhere(stack: Stack) -> None:
    journey = stack.journey()
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    customer = await tagged_customer(stack, uuid.uuid4().hex, consent="withdrawn", frequency_cap="daily")
    response = await stack.http.post(
        f"/v1/journeys/{journey['id']}/test-send",
        json={"step": "hello", "customer_id": customer, "to": "qa@example.org"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "sent"
    [mail] = await stack.smtp.wait_for(1, timeout=10)
    assert mail.rcpt_tos == ["qa@example.org"]
    assert mail.message["Subject"] == f"[TEST] {journey['steps'][0]['template']['subject']}"
    assert await stack.pool.fetchval("SELECT count(*) FROM messages WHERE customer_id = $1", customer) == 0

    # The same for a broadcast not created yet; a wrong address is a 422 naming it.
    broadcast = {
        "segment": where_tag("x"),
        "channel": "email",
        "template": {"subject": "Hi {{ customer.first_name }}", "text": "t"},
    }
    sent = await stack.http.post(
        "/v1/broadcasts/test-send", json={"broadcast": broadcast, "customer_id": customer, "to": "qa2@example.org"}
    )
    assert sent.status_code == 200, sent.text
    mail = await stack.smtp.wait_for(2, timeout=10)
    assert mail[1].message["Subject"] == "[TEST] Hi Ada" and mail[1].rcpt_tos == ["qa2@example.org"]
    bad = await stack.http.post(
        "/v1/broadcasts/test-send", json={"broadcast": broadcast, "customer_id": customer, "to": "nobody"}
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "to"
    preview = await stack.http.post("/v1/broadcasts/preview", json={"broadcast": broadcast, "customer_id": customer})
    assert preview.json()["decision"]["summary"] == "would skip because consent_withdrawn:email"
    assert await stack.pool.fetchval("SELECT count(*) FROM messages WHERE customer_id = $1", customer) == 0


async def test_malformed_broadcast_segment_and_preview_bodies_are_4xx_naming_the_field(stack: Stack) -> None:
    message = {"channel": "email", "template": {"subject": "s", "text": "t"}}
    cases: list[tuple[str, str, Any]] = [
        ("post", "/v1/broadcasts", [1, 2]),
        ("post", "/v1/broadcasts", {**message}),
        ("post", "/v1/broadcasts", {**message, "segment": 5}),
        ("post", "/v1/broadcasts", {**message, "segment": {"where": "x"}}),
        ("post", "/v1/broadcasts", {**message, "segment": {}, "send_at": {"local": 5}}),
        ("post", "/v1/broadcasts", {**message, "segment": {}, "send_at": "2030-01-01T10:00"}),
        ("post", "/v1/broadcasts", {**message, "segment": {}, "rate_limit": "fast"}),
        ("post", "/v1/broadcasts", {**message, "segment": {}, "id": "no spaces"}),
        ("post", "/v1/broadcasts", {**message, "segment": {}, "holdout": {"percent": 100}}),
        ("post", "/v1/broadcasts/preview", {"customer_id": "x"}),
        ("post", "/v1/broadcasts/preview", {"broadcast_id": "nope", "customer_id": "x"}),
        ("post", "/v1/broadcasts/preview", {"broadcast": {"segment": {}}, "customer_id": "x"}),
        ("post", "/v1/broadcasts/test-send", {"broadcast_id": "nope", "customer_id": "x"}),
        ("post", "/v1/journeys/nope/preview", {"step": "a", "customer_id": "x"}),
        ("post", "/v1/journeys/nope/test-send", {"step": "a", "customer_id": "x", "to": "a@b"}),
        ("put", "/v1/segments/s1", {"where": [{"field": "profile.a", "op": "between"}]}),
        ("put", "/v1/segments/s1", {"events": [{"event": "e", "within": "soon"}]}),
        ("put", "/v1/segments/bad id", {}),
        ("get", "/v1/segments/s1/count?sample=1000", None),
        ("get", "/v1/broadcasts/nope", None),
        ("post", "/v1/broadcasts/nope/resume", None),
    ]
    for method, path, body in cases:
        response = await stack.http.request(method.upper(), path, json=body)
        assert 400 <= response.status_code < 500, (path, body, response.status_code, response.text)
        assert "error" in response.json(), (path, response.text)
