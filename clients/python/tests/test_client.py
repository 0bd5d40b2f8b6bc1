"""The Python client against a small local HTTP server in the API's shapes (fake_api.FakeApi).

What the real API does with what the client sends (events stored, profiles merged) is tested in the server's
suite, tests/e2e/test_client_api.py.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from fake_api import FakeApi
from parcours_client import ParcoursClient, ParcoursClientError, ParcoursUnavailableError


def fast_client(url: str, key: str = "test-key", **kwargs: Any) -> ParcoursClient:
    return ParcoursClient(url, key, backoff_initial=0.05, backoff_max=0.2, timeout=5, **kwargs)


def test_identify_and_track_in_batches(api: FakeApi) -> None:
    with fast_client(api.url, batch_size=3) as parcours:
        answer = parcours.identify("cust-1", email="c@example.com", attributes={"plan": "pro"})
        assert answer["profile"]["id"] == "cust-1" and answer["created"] is True
        ids = [parcours.track("cust-1", "viewed", {"n": n}) for n in range(5)]
        assert parcours.pending == 2  # the first 3 went out as a full batch
        assert [len(b["events"]) for b in api.bodies()] == [3]
    # Leaving the block sent the rest.
    assert [len(b["events"]) for b in api.bodies()] == [3, 2]
    assert api.bodies("/v1/identify") == [
        {
            "customer_id": "cust-1",
            "explicit": False,
            "source": "api",
            "traits": {"email": "c@example.com", "attributes": {"plan": "pro"}},
        }
    ]
    assert list(api.stored) == ids
    assert [(api.stored[i]["customer_id"], api.stored[i]["properties"]) for i in ids] == [
        ("cust-1", {"n": n}) for n in range(5)
    ]
    assert [r["status"] for r in parcours.results] == ["accepted"] * 5


def test_a_visitor_tracked_anonymously_then_identified(api: FakeApi) -> None:
    with fast_client(api.url) as parcours:
        ids = [parcours.track(None, "viewed", {"n": n}, anonymous_id="device-1") for n in range(2)]
        answer = parcours.identify("cust-2", anonymous_ids=["device-1"], aliases={"email": "v@example.com"})
        ids.append(parcours.track(None, "viewed", {"n": 2}, anonymous_id="device-1"))
    # The queued events went out before the identify call, so the API could merge them.
    assert [r.path for r in api.received] == ["/v1/events", "/v1/identify", "/v1/events"]
    assert [api.stored[i].get("anonymous_id") for i in ids] == ["device-1"] * 3
    assert all("customer_id" not in api.stored[i] for i in ids)
    assert api.bodies("/v1/identify")[0]["aliases"] == [{"kind": "email", "value": "v@example.com"}]
    assert answer["merges"] == [{"alias_kind": "anonymous_id", "alias_value": "device-1"}]
    with pytest.raises(ValueError, match="customer_id or an anonymous_id"):
        fast_client(api.url).track(None, "viewed")


def test_retries_a_503_with_the_same_event_ids(api: FakeApi) -> None:
    api.fail(2)
    with fast_client(api.url) as parcours:
        event_id = parcours.track("cust-3", "clicked")
        [result] = parcours.flush()
    assert result == {"event_id": event_id, "status": "accepted"}
    assert [r.status for r in api.received] == [503, 503, 202]
    assert {b["events"][0]["event_id"] for b in api.bodies()} == {event_id}  # idempotent retries


def test_gives_up_after_max_retries_and_keeps_the_events(api: FakeApi) -> None:
    api.fail(100)
    parcours = fast_client(api.url, max_retries=2)
    parcours.track("cust-4", "clicked")
    with pytest.raises(ParcoursUnavailableError, match="3 attempts"):
        parcours.flush()
    assert parcours.pending == 1 and len(api.received) == 3
    api.fail(0)
    [result] = parcours.flush()
    assert result["status"] == "accepted" and parcours.pending == 0
    parcours.close()


def test_a_4xx_is_raised_at_once_with_its_field(api: FakeApi) -> None:
    parcours = fast_client(api.url, key="wrong")
    parcours.track("cust-5", "clicked")
    with pytest.raises(ParcoursClientError) as info:
        parcours.flush()
    assert info.value.status == 401 and info.value.field == "authorization"
    assert len(api.received) == 1  # not retried
    assert parcours.pending == 0  # a refused batch is dropped: sending it again cannot help

    api.fail(1, status=422, message="unknown time zone", field="traits.timezone")
    with pytest.raises(ParcoursClientError, match=r"422: unknown time zone \(field: traits.timezone\)") as info:
        fast_client(api.url).identify("cust-5", timezone="Nowhere/Land")
    assert info.value.field == "traits.timezone"


def test_retries_until_the_server_comes_up() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    results: list[dict[str, Any]] = []

    def send() -> None:
        with fast_client(f"http://127.0.0.1:{port}", max_retries=10) as parcours:
            parcours.track("cust-6", "clicked")
            results.extend(parcours.flush())

    sending = threading.Thread(target=send)
    sending.start()
    time.sleep(0.4)  # connection refused meanwhile
    assert sending.is_alive() and not results
    api = FakeApi(port=port).start()
    try:
        sending.join(10)
        assert not sending.is_alive()
        assert [r["status"] for r in results] == ["accepted"]
    finally:
        api.stop()
