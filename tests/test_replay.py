"""Recorded journey histories replay against today's workflow code.

A change that would break customers already running a journey (non-determinism) fails here before it ships.
Record new histories with ``PARCOURS_RECORD_HISTORIES=1 pytest tests/test_engine.py``; keep the old ones:
they are the running customers of older releases. Behaviour changes go behind ``workflow.patched()``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.journey import JourneyWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_the_corpus_covers_every_example() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"welcome-series", "abandoned-cart", "abandoned-cart-clicked"} <= names
    # Recorded by tests/test_examples.py.
    assert {"win-back", "limited-time-offer", "birthday", "onboarding-fallback"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=[JourneyWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"
