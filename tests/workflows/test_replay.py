"""Recorded journey histories replay against today's workflow code.

A change that would break customers already running a journey (non-determinism) fails here before it ships.
Record new histories with ``PARCOURS_RECORD_HISTORIES=1 pytest tests/workflows/test_journey.py tests/e2e``; keep
the old ones: they are the running customers of older releases. Behaviour changes go behind ``workflow.patched()``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from contracts.journey import IDENTIFY_SIGNAL
from workflows.broadcast import PARALLEL_BATCHES, BroadcastWorkflow
from workflows.journey import (
    ASSIGNMENTS_KEPT,
    CONVERSION_RECORDS_LAST_STEP,
    FAILURES_VISIBLE,
    SEND_RECORDS_OUTCOME,
    WAITS_CONTINUE_AS_NEW,
    JourneyWorkflow,
)

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


def test_the_corpus_covers_every_example() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"welcome-series", "abandoned-cart", "abandoned-cart-clicked"} <= names
    # Recorded by tests/e2e/test_examples.py.
    assert {"win-back", "limited-time-offer", "birthday", "onboarding-fallback"} <= names


def test_the_corpus_has_a_run_identified_halfway() -> None:
    """Recorded by tests/e2e/test_identity.py: a visitor's cart journey told mid-wait that it belongs to a customer."""
    path = Path(__file__).resolve().parents[1] / "histories" / "abandoned-cart-identified.json"
    signals = [
        e["workflowExecutionSignaledEventAttributes"]["signalName"]
        for e in json.loads(path.read_text())["events"]
        if "workflowExecutionSignaledEventAttributes" in e
    ]
    assert IDENTIFY_SIGNAL in signals


def patches_in(path: Path) -> set[str]:
    """The workflow.patched() ids a recorded history carries (in its patch markers' payloads)."""
    found = set()
    for event in json.loads(path.read_text())["events"]:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker.get("markerName") == "core_patch":
            for payload in marker.get("details", {}).get("patch-data", {}).get("payloads", []):
                found.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return found


def test_the_corpus_covers_both_sides_of_every_patch() -> None:
    """Each workflow.patched() change has a history from before it and one taken with it."""
    patched = {p.stem for p in HISTORIES if SEND_RECORDS_OUTCOME in patches_in(p)}
    unpatched = {p.stem for p in HISTORIES if SEND_RECORDS_OUTCOME not in patches_in(p)}
    assert "welcome-series-send-records-outcome" in patched
    assert "welcome-series" in unpatched
    converted = {p.stem for p in HISTORIES if CONVERSION_RECORDS_LAST_STEP in patches_in(p)}
    assert "abandoned-cart-converted" in converted  # the step's outcome goes with the conversion
    assert "abandoned-cart-identified" not in converted  # converted before: two local activities
    # Recorded by tests/workflows/test_journey_failures.py: a failed step marks the run (search attributes).
    assert "webhook-failed" in {p.stem for p in HISTORIES if FAILURES_VISIBLE in patches_in(p)}
    # Recorded by tests/workflows/test_journey_flow_control.py: two splits, both assignments kept.
    kept = {p.stem for p in HISTORIES if ASSIGNMENTS_KEPT in patches_in(p)}
    assert "ab-two-splits-assignments-kept" in kept
    assert "abandoned-cart-converted" not in kept
    # Recorded by tests/workflows/test_journey_continue_as_new.py: a wait that continued as new, and the next run
    # resuming it; the waits recorded before the patch never continue as new from a wait.
    moved = {p.stem for p in HISTORIES if WAITS_CONTINUE_AS_NEW in patches_in(p)}
    assert {"wait-continued-as-new", "wait-resumed-after-continue-as-new"} <= moved
    assert "welcome-series" not in moved
    # Recorded by tests/workflows/test_broadcast.py: a broadcast at local times, one batch a round, then two lanes.
    lanes = {p.stem for p in HISTORIES if PARALLEL_BATCHES in patches_in(p)}
    assert "broadcast-local-time-lanes" in lanes
    assert "broadcast-local-time" not in lanes


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=[JourneyWorkflow, BroadcastWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"
