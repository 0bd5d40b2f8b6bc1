"""Building and running a Parcours worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import structlog
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkerDeploymentConfig
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.broadcasts import BroadcastActivities
from activities.channels.base import Channel
from activities.channels.inbox import InboxChannel
from activities.channels.registry import build_channels, close_channels
from activities.customer_values import CustomerValueActivities
from activities.journey import JourneyActivities
from activities.segments import SegmentActivities
from activities.steps import StepActivities
from config.settings import Settings
from orchestration import customer_values as customer_value_schedule
from workflows.broadcast import BroadcastWorkflow
from workflows.customer_values import CustomerValueWorkflow
from workflows.journey import JourneyWorkflow
from workflows.segment import SegmentEntryWorkflow

log = structlog.get_logger(__name__)

WORKFLOWS = [JourneyWorkflow, SegmentEntryWorkflow, CustomerValueWorkflow, BroadcastWorkflow]
GRACEFUL_SHUTDOWN = timedelta(seconds=20)
HEARTBEAT_THROTTLE = timedelta(seconds=5)
"""The longest the worker holds an activity's newest heartbeat before sending it to the server. Temporal's default
is 80 % of the heartbeat timeout: for a broadcast batch (30 s) the server then hears from it every 24 s, and a
process starved of CPU for 6 s more has its batch timed out and retried while its chunks are still delivering."""
# The sandbox still refuses non-deterministic calls (datetime.now, random, I/O) at run time, but no longer
# re-imports the workflow modules for every run: they keep no module-level state, and that re-import was a
# quarter of the worker's CPU (bench/README.md). The replay test keeps the full sandbox.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_all_modules())


def build_worker(
    client: Client,
    settings: Settings,
    pool: asyncpg.Pool,
    channels: dict[str, Channel],
    *,
    task_queue: str | None = None,
    activities: JourneyActivities | None = None,
    sandboxed: bool = True,
) -> Worker:
    """The worker of ``task_queue`` (by default the configured one): both workflows and every activity.

    ``sandboxed=False`` runs workflows without the sandbox's run-time checks: for measuring what the sandbox costs
    (``bench/run.py --unsandboxed``), never for production.
    """
    activities = activities or JourneyActivities(pool, channels, settings)
    segments = SegmentActivities(pool, client, settings)
    steps = StepActivities(pool, client, settings)
    values = CustomerValueActivities(pool)
    broadcasts = BroadcastActivities(pool, activities, settings)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=WORKFLOWS,
        activities=[*activities.all(), *segments.all(), *steps.all(), *values.all(), *broadcasts.all()],
        # A send holds a pooled connection while the provider answers: never run more sends than connections.
        max_concurrent_activities=settings.database_pool_max,
        max_concurrent_local_activities=settings.database_pool_max,
        # On shutdown, let in-flight sends finish (and record) rather than cancel them mid-delivery.
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        workflow_runner=WORKFLOW_RUNNER if sandboxed else UnsandboxedWorkflowRunner(),
        deployment_config=deployment_config(settings),
    )


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """Worker Versioning when both the deployment name and the build id are set (else None: unversioned).

    Runs auto-upgrade: a journey lives for weeks, so its runs move to the current version on their next workflow
    task, and changes to what a running workflow does go behind ``workflow.patched()`` (deploy/README.md).
    """
    if not settings.worker_deployment_name or not settings.worker_build_id:
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(settings.worker_deployment_name, settings.worker_build_id),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.AUTO_UPGRADE,
    )


@contextlib.asynccontextmanager
async def channels_for(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[dict[str, Channel]]:
    channels = build_channels(settings, inbox=InboxChannel(pool), pool=pool)
    try:
        yield channels
    finally:
        await close_channels(channels)


async def run_worker(client: Client, settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then finish in-flight tasks and shut down."""
    async with channels_for(settings, pool) as channels:
        worker = build_worker(client, settings, pool, channels)
        log.info("worker.started", task_queue=settings.task_queue)
        await _sync_customer_value_schedule(client, settings)
        async with worker:
            await stop.wait()
        log.info("worker.stopped")


async def _sync_customer_value_schedule(client: Client, settings: Settings) -> None:
    """Make the customer-value schedule match this worker's settings; a failure is logged, journeys run on."""
    try:
        change = await customer_value_schedule.sync_schedule(client, settings)
    except Exception as exc:
        log.warning("customer_values.schedule_failed", error=str(exc))
    else:
        log.info("customer_values.schedule", change=change, every=settings.customer_values_every)
