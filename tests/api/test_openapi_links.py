"""The OpenAPI document's links: each names an operation that exists and fills only parameters it has, and the
create-read-update-delete chains are all there (clients, generators and schemathesis' stateful runs follow them)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from api.app import create_app
from tests.support.stack import make_settings


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with warnings.catch_warnings():  # FastAPI warns of the tracking routes' GET and HEAD sharing an operation id
        warnings.simplefilter("ignore", UserWarning)
        return create_app(make_settings(), pool=None, client=None).openapi()  # type: ignore[arg-type]


def all_links(spec: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    found = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for response in operation.get("responses", {}).values():
                for name, link in (response.get("links") or {}).items():
                    found[(f"{method.upper()} {path}", name, str(id(response)))] = link
    return found


def target(spec: dict[str, Any], ref: str) -> tuple[str, str, dict[str, Any]]:
    assert ref.startswith("#/paths/"), ref
    pointer, method = ref.removeprefix("#/paths/").rsplit("/", 1)
    path = pointer.replace("~1", "/").replace("~0", "~")
    assert path in spec["paths"] and method in spec["paths"][path], f"{ref} names no operation"
    return path, method, spec["paths"][path][method]


def test_every_link_names_an_operation_and_fills_only_its_path_parameters(spec: dict[str, Any]) -> None:
    links = all_links(spec)
    assert len(links) >= 40
    for (source, name, _), link in links.items():
        *_, operation = target(spec, link["operationRef"])
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert set(link["parameters"]) <= declared, f"{source} {name}: {link['parameters']} not in {declared}"
        for expression in link["parameters"].values():
            assert expression.startswith(("$request.path.", "$response.body#/")), expression


@pytest.mark.parametrize(
    ("source", "reached"),
    [
        ("POST /v1/journeys", {"GET", "pause", "resume", "archive"}),
        ("PUT /v1/segments/{segment_id}", {"GET", "count", "DELETE"}),
        ("PUT /v1/customers/{customer_id}", {"GET", "consent", "devices", "export", "DELETE"}),
        ("POST /v1/broadcasts", {"GET", "pause", "resume", "cancel"}),
        ("PUT /v1/customers/{customer_id}/devices/{device_id}", {"GET", "DELETE"}),
    ],
)
def test_each_create_links_to_read_change_and_delete(spec: dict[str, Any], source: str, reached: set[str]) -> None:
    names = set()
    for (origin, _, _), link in all_links(spec).items():
        if origin == source:
            path, method, _ = target(spec, link["operationRef"])
            names.add(method.upper())
            names.add(path.rsplit("/", 1)[1])
    assert reached <= names, names
