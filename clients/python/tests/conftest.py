"""The client's tests run against ``FakeApi`` (fake_api.py), a small HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_api import FakeApi


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi().start()
    try:
        yield server
    finally:
        server.stop()
