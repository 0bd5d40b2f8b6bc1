"""The baseline: a hand-written Temporal workflow with the reference journey's shape and no Parcours code.

Three no-op activities (load the profile, send, record the outcome) and one signal (the purchase), started with
signal-with-start like a Parcours entry, on its own task queue. ``on_send`` lets the benchmark know when the
"message" went out (the baseline's equivalent of the email reaching the SMTP sink).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

WORKFLOW = "BaselineJourney"
SIGNAL = "event"
TIMEOUT = timedelta(seconds=30)
RETRY = RetryPolicy(maximum_attempts=5)


class BaselineInput(BaseModel):
    customer_id: str


class BaselineEvent(BaseModel):
    name: str


class BaselineResult(BaseModel):
    converted: bool


class BaselineActivities:
    def __init__(self, on_send: Callable[[str, float], None]) -> None:
        self._on_send = on_send

    @activity.defn(name="baseline_load_profile")
    async def load_profile(self, customer_id: str) -> str:
        return customer_id

    @activity.defn(name="baseline_send")
    async def send(self, customer_id: str) -> str:
        self._on_send(customer_id, time.perf_counter())
        return "sent"

    @activity.defn(name="baseline_record")
    async def record(self, customer_id: str) -> None:
        return None

    def all(self) -> list[object]:
        return [self.load_profile, self.send, self.record]


@workflow.defn(name=WORKFLOW)
class BaselineWorkflow:
    def __init__(self) -> None:
        self._events: list[str] = []

    @workflow.signal(name=SIGNAL)
    def on_event(self, event: BaselineEvent) -> None:
        self._events.append(event.name)

    @workflow.run
    async def run(self, input: BaselineInput) -> BaselineResult:
        opts = {"start_to_close_timeout": TIMEOUT, "retry_policy": RETRY}
        await workflow.execute_activity("baseline_load_profile", input.customer_id, result_type=str, **opts)  # type: ignore[arg-type]
        await workflow.execute_activity("baseline_send", input.customer_id, result_type=str, **opts)  # type: ignore[arg-type]
        await workflow.wait_condition(lambda: "purchase" in self._events, timeout=timedelta(days=1))
        await workflow.execute_activity("baseline_record", input.customer_id, **opts)  # type: ignore[arg-type]
        return BaselineResult(converted=True)


def build_baseline_worker(
    client: Client, task_queue: str, on_send: Callable[[str, float], None], *, max_concurrent: int = 10
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BaselineWorkflow],
        activities=BaselineActivities(on_send).all(),
        max_concurrent_activities=max_concurrent,
    )


async def start_baseline(client: Client, task_queue: str, customer_id: str) -> None:
    """Signal-with-start, as a Parcours entry does (the trigger arrives as the start signal)."""
    await client.start_workflow(
        WORKFLOW,
        BaselineInput(customer_id=customer_id),
        id=f"baseline:{customer_id}",
        task_queue=task_queue,
        start_signal=SIGNAL,
        start_signal_args=[BaselineEvent(name="trigger")],
        result_type=BaselineResult,
    )


async def signal_purchase(client: Client, customer_id: str) -> None:
    await client.get_workflow_handle(f"baseline:{customer_id}").signal(SIGNAL, BaselineEvent(name="purchase"))
