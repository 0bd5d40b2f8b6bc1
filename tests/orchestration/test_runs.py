"""Runs of journeys (orchestration.runs): signalling or describing a run that does not exist says so."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from contracts.journey import EXIT_SIGNAL, ExitRequest
from orchestration.runs import JourneyRuns


@pytest.mark.devserver
async def test_signal_and_describe_say_not_there_for_a_run_that_never_was(dev_env: WorkflowEnvironment) -> None:
    runs = JourneyRuns(dev_env.client, rpc_timeout=timedelta(seconds=5))
    missing = f"nobody:{uuid.uuid4().hex}"
    assert await runs.signal(missing, EXIT_SIGNAL, ExitRequest(reason="test")) is False
    assert await runs.is_running(missing) is False
