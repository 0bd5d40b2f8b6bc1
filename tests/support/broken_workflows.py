"""Workflow code with mistakes, registered under the journey workflow's name: what ``parcours ops`` must catch.

Kept in a module of its own that imports only Temporal, so the workflow sandbox can import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue

WORKFLOW_NAME = "JourneyWorkflow"
"""``contracts.journey.WORKFLOW_NAME`` (checked by tests/cli/test_ops.py)."""


@workflow.defn(name=WORKFLOW_NAME)
class BuggyJourney:
    """New workflow code with a bug: every workflow task fails, so the run is stuck."""

    @workflow.run
    async def run(self, _input: Any) -> None:
        raise RuntimeError("bug in new code: step table is empty")


@workflow.defn(name=WORKFLOW_NAME)
class ChangedJourney:
    """A workflow change that was not put behind workflow.patched(): it sleeps before anything else."""

    @workflow.run
    async def run(self, _input: Any) -> None:
        await workflow.sleep(timedelta(hours=1))


CHANGED = [ChangedJourney]


@workflow.defn(name=WORKFLOW_NAME)
class DeafJourney:
    """A run that never leaves: it takes every signal, the exit signal too, and ignores it (as a run stuck on a
    failing step or a send retrying for hours does)."""

    @workflow.run
    async def run(self, _input: Any) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(dynamic=True)
    def ignore(self, _name: str, _args: Sequence[RawValue]) -> None:
        pass
