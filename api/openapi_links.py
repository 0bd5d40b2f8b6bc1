"""OpenAPI links between operations: what a client can call next with what an answer (or its request) gave.

A link names its target by path and method (``operationRef``), so renaming a route function changes nothing.
Clients and generators can follow them, and schemathesis' stateful testing uses them to chain calls: create a
resource, then read, change and delete that very resource (tests/api/test_fuzz_hostile.py).

    responses=linked(201, "Published", get=to("/v1/journeys/{journey_id}", "get", journey_id=BODY_ID))
"""

from __future__ import annotations

from typing import Any

BODY_ID = "$response.body#/id"
"""The ``id`` of the answer."""


def from_path(name: str) -> str:
    """The request's own path parameter ``name``."""
    return f"$request.path.{name}"


def to(path: str, method: str, **parameters: str) -> dict[str, Any]:
    """A link to the operation ``method`` ``path``, filling its path parameters from runtime expressions."""
    pointer = path.replace("~", "~0").replace("/", "~1")
    return {"operationRef": f"#/paths/{pointer}/{method}", "parameters": parameters}


def linked(*statuses: int, **links: dict[str, Any]) -> dict[int | str, Any]:
    """``responses=`` for a route: these statuses carry ``links`` (named by the keyword)."""
    return {status: {"description": "Successful Response", "links": links} for status in statuses}


def customer_links(customer_id: str) -> dict[str, dict[str, Any]]:
    """Everything about one customer, reached from an answer about them."""
    base = "/v1/customers/{customer_id}"
    return {
        "GetCustomer": to(base, "get", customer_id=customer_id),
        "GetConsent": to(f"{base}/consent", "get", customer_id=customer_id),
        "PutConsent": to(f"{base}/consent", "put", customer_id=customer_id),
        "ConsentHistory": to(f"{base}/consent/history", "get", customer_id=customer_id),
        "Journeys": to(f"{base}/journeys", "get", customer_id=customer_id),
        "Inbox": to(f"{base}/inbox", "get", customer_id=customer_id),
        "Devices": to(f"{base}/devices", "get", customer_id=customer_id),
        "Export": to(f"{base}/export", "get", customer_id=customer_id),
        "Erase": to(base, "delete", customer_id=customer_id),
    }


def journey_links(journey_id: str) -> dict[str, dict[str, Any]]:
    base = "/v1/journeys/{journey_id}"
    return {
        "GetJourney": to(base, "get", journey_id=journey_id),
        "Pause": to(f"{base}/pause", "post", journey_id=journey_id),
        "Resume": to(f"{base}/resume", "post", journey_id=journey_id),
        "Archive": to(f"{base}/archive", "post", journey_id=journey_id),
    }


def segment_links(segment_id: str) -> dict[str, dict[str, Any]]:
    base = "/v1/segments/{segment_id}"
    return {
        "GetSegment": to(base, "get", segment_id=segment_id),
        "CountSegment": to(f"{base}/count", "get", segment_id=segment_id),
        "DeleteSegment": to(base, "delete", segment_id=segment_id),
    }


def broadcast_links(broadcast_id: str) -> dict[str, dict[str, Any]]:
    base = "/v1/broadcasts/{broadcast_id}"
    return {
        "GetBroadcast": to(base, "get", broadcast_id=broadcast_id),
        "Pause": to(f"{base}/pause", "post", broadcast_id=broadcast_id),
        "Resume": to(f"{base}/resume", "post", broadcast_id=broadcast_id),
        "Cancel": to(f"{base}/cancel", "post", broadcast_id=broadcast_id),
    }


def device_links() -> dict[str, dict[str, Any]]:
    base = "/v1/customers/{customer_id}/devices/{device_id}"
    ids = {"customer_id": from_path("customer_id"), "device_id": from_path("device_id")}
    return {"GetDevice": to(base, "get", **ids), "DeleteDevice": to(base, "delete", **ids)}
