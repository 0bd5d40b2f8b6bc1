"""Fault tests: real processes (dev server, PostgreSQL, workers) stopped, killed and restarted mid-run.

They are slow (minutes), so they run only when asked for: ``pytest -m faults tests/faults`` (or
``PARCOURS_FAULTS=1``). The ``faults`` marker is registered here until pyproject.toml lists it.
"""

from __future__ import annotations

import os

import pytest

from tests.support.faults import dev_server, own_postgres  # noqa: F401  (fixtures)
from tests.support.stack import stack_fixture  # noqa: F401  (fixture)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault tests with real processes; run with -m faults")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "faults" in (config.getoption("markexpr") or "") or os.environ.get("PARCOURS_FAULTS") == "1":
        return
    skip = pytest.mark.skip(reason="fault test: run with -m faults (or PARCOURS_FAULTS=1)")
    for item in items:
        if "faults" in item.keywords:
            item.add_marker(skip)
