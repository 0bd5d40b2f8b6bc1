"""Test sends where push goes through the ``devices`` adapter (FCM, APNs, Web Push to registered devices), the
production set-up: an email test still reaches the given address, and a push test, which that adapter could only
deliver to the customer's own devices, is refused naming ``channel`` instead of reaching the customer."""

from __future__ import annotations

import uuid

import httpx

from api.app import create_app
from tests.activities.channels.test_push import vapid_key
from tests.support.stack import API_KEY, Stack, make_settings, stack_fixture  # noqa: F401  (registers the fixture)


async def test_test_sends_with_the_devices_push_adapter(stack: Stack) -> None:
    journey = stack.journey()
    journey["steps"][0] = {
        "id": "hello",
        "type": "send",
        "channels": ["push", "email"],
        "content": {"push": {"title": "Hi", "body": "Back soon?"}, "email": {"subject": "Hi there", "text": "t"}},
    }
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201, journey
    customer = f"dev-{uuid.uuid4().hex[:10]}"
    assert (await stack.http.put(f"/v1/customers/{customer}", json={"email": f"{customer}@example.com"})).is_success
    device = {"platform": "fcm", "token": "customer-own-token-" + "x" * 20}
    assert (await stack.http.put(f"/v1/customers/{customer}/devices/own-phone", json=device)).is_success

    settings = make_settings(
        channel_push="devices",
        vapid_private_key=vapid_key()[0],  # Web Push keys: no request leaves the machine in this test
        vapid_subject="mailto:ops@example.com",
        smtp_host=stack.smtp.host,
        smtp_port=stack.smtp.port,
    )
    app = create_app(settings, pool=stack.pool, client=stack.client)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://parcours.test", headers=headers
    ) as http:
        url = f"/v1/journeys/{journey['id']}/test-send"
        body = {"step": "hello", "customer_id": customer}
        sent = await http.post(url, json={**body, "channel": "email", "to": "qa@example.org"})
        assert sent.status_code == 200, sent.text
        assert sent.json()["status"] == "sent"
        [mail] = await stack.smtp.wait_for(1, timeout=10)
        assert mail.rcpt_tos == ["qa@example.org"] and mail.message["Subject"] == "[TEST] Hi there"

        pushed = await http.post(url, json={**body, "channel": "push", "to": "my-own-device-token"})
        assert pushed.status_code == 422, pushed.text
        assert pushed.json()["error"]["field"] == "channel"
        assert "devices" in pushed.json()["error"]["message"]
    # Nothing went to the customer's device, nothing was recorded for it.
    assert await stack.pool.fetchval("SELECT count(*) FROM messages WHERE customer_id = $1", customer) == 0
    assert await stack.pool.fetchval("SELECT count(*) FROM message_deliveries WHERE customer_id = $1", customer) == 0
