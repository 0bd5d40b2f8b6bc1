"""Killing and restarting real processes mid-run: the worker (kill -9), the dev server, PostgreSQL.

Every test runs a few hundred customers through a one-email journey and asserts on what the customers got: the
count of emails per recipient at the SMTP sink, and the rows in ``messages``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.service import RPCError

from api.app import create_app, run_drainer
from config.settings import Settings
from contracts.journey import Event
from journeys import parse_journey
from orchestration.router import EventRouter
from store import create_pool
from store import journeys as journey_store
from tests.support.faults import (
    DevServer,
    OwnPostgres,
    WorkerProcess,
    duplicates_report,
    mail_counts,
    wait_until,
    worker_env,
)
from tests.support.mail import SmtpSink
from tests.support.temporal import task_queue

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

CUSTOMERS = 300
API_KEY = "faults-key"


@dataclass
class Rig:
    tmp: Path
    postgres: OwnPostgres
    dev: DevServer
    client: Client
    pool: asyncpg.Pool
    smtp: SmtpSink
    settings: Settings
    journey_id: str
    trigger: str

    def worker(self, name: str) -> WorkerProcess:
        env = worker_env(
            temporal_address=self.dev.address,
            database_url=self.postgres.url,
            task_queue=self.settings.task_queue,
            smtp_host=self.smtp.host,
            smtp_port=self.smtp.port,
        )
        return WorkerProcess(env, self.tmp / f"{name}.log").start()

    def router(self) -> EventRouter:
        return EventRouter(self.pool, self.client, self.settings)

    def events(self, customers: list[str]) -> list[Event]:
        now = datetime.now(UTC)
        return [
            Event(event_id=f"ev-{uuid.uuid4().hex}", customer_id=c, name=self.trigger, occurred_at=now)
            for c in customers
        ]

    async def customers(self, n: int) -> list[str]:
        ids = [f"c{i:04d}-{uuid.uuid4().hex[:6]}" for i in range(n)]
        await self.pool.execute(
            "INSERT INTO customers (id, email, attributes) "
            """SELECT c, c || '@example.com', '{"first_name": "Ada"}'::jsonb FROM unnest($1::text[]) c""",
            ids,
        )
        await self.pool.execute(
            "INSERT INTO consent_events (customer_id, scope, name, status, source) "
            "SELECT c, 'channel', 'email', 'granted', 'test' FROM unnest($1::text[]) c",
            ids,
        )
        return ids

    async def all_finished(self, customers: list[str], timeout: float) -> None:  # noqa: ASYNC109
        """Every customer's run closed (completed), whichever server process answers."""
        client = self.client

        async def one(c: str) -> Any:
            return await client.get_workflow_handle(f"{self.journey_id}:{c}").result()

        semaphore = asyncio.Semaphore(50)

        async def bounded(c: str) -> Any:
            async with semaphore:
                return await one(c)

        results = await asyncio.wait_for(asyncio.gather(*(bounded(c) for c in customers)), timeout)
        statuses = Counter(r.status if hasattr(r, "status") else r["status"] for r in results)
        assert statuses == {"completed": len(customers)}, statuses

    async def assert_each_got_one_email(self, customers: list[str]) -> dict[str, Any]:
        """Exactly one email per customer; a duplicate must be the documented window (same Message-ID)."""
        counts = mail_counts(self.smtp.messages)
        rows = await self.pool.fetch(
            "SELECT customer_id, status, attempts FROM messages WHERE journey_id = $1", self.journey_id
        )
        assert Counter(r["status"] for r in rows) == {"sent": len(customers)}
        assert sorted(r["customer_id"] for r in rows) == sorted(customers)
        missing = [c for c in customers if counts[f"{c}@example.com"] == 0]
        assert not missing, f"{len(missing)} customers got no email: {missing[:5]}"
        duplicates = duplicates_report(self.smtp.messages)
        # The one documented window: killed between the SMTP 250 and the heartbeat; the copy has the same id.
        assert all(len(ids) == 1 for _, _, ids in duplicates), duplicates
        retried = sum(1 for r in rows if r["attempts"] > 1)
        return {"customers": len(customers), "duplicates": len(duplicates), "rows_retried": retried}


@pytest_asyncio.fixture
async def rig(tmp_path: Path, own_postgres: OwnPostgres) -> AsyncIterator[Rig]:
    dev = DevServer(tmp_path / "temporal")
    client = await dev.start()
    smtp = SmtpSink()
    await smtp.start()
    pool = await create_pool(own_postgres.url, min_size=1, max_size=10)
    tag = uuid.uuid4().hex[:8]
    journey = parse_journey(
        {
            "id": f"fault-{tag}",
            "name": f"Fault {tag}",
            "trigger": {"event": f"signup-{tag}"},
            "steps": [
                {
                    "id": "hello",
                    "type": "send",
                    "channel": "email",
                    "template": {"subject": "Hello {{ customer.first_name }}", "text": "Welcome."},
                }
            ],
        }
    )
    await journey_store.publish(pool, journey)
    settings = Settings(
        task_queue=task_queue(),
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        consent_default="opt_in",
        api_keys=[API_KEY],
        otel_exporter="none",
        log_format="console",
    )
    try:
        yield Rig(tmp_path, own_postgres, dev, client, pool, smtp, settings, journey.id, journey.trigger.event)
    finally:
        await pool.close()
        await smtp.stop()
        await dev.stop()


async def test_kill_9_worker_mid_run_every_email_exactly_once(rig: Rig) -> None:
    customers = await rig.customers(CUSTOMERS)
    first = rig.worker("worker-1")
    second: WorkerProcess | None = None
    try:
        ingest = asyncio.create_task(rig.router().ingest(rig.events(customers)))
        await wait_until(
            lambda: _ready(len(rig.smtp.messages) >= CUSTOMERS // 3), timeout=90, what="a third of the emails"
        )
        first.kill9()
        killed_at = len(rig.smtp.messages)
        killed = time.monotonic()
        outcomes = await ingest
        assert all(o.routed for o in outcomes)
        second = rig.worker("worker-2")
        await rig.all_finished(customers, timeout=180)
        recovered = time.monotonic() - killed
        report = await rig.assert_each_got_one_email(customers)
        print(f"\nkill -9 after {killed_at}/{CUSTOMERS} emails; all done {recovered:.0f}s after the kill; {report}")
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_dev_server_restart_mid_run_every_email_exactly_once(rig: Rig) -> None:
    customers = await rig.customers(CUSTOMERS)
    worker = rig.worker("worker")
    try:
        outcomes = await rig.router().ingest(rig.events(customers))
        assert all(o.routed for o in outcomes)
        await wait_until(
            lambda: _ready(len(rig.smtp.messages) >= CUSTOMERS // 3), timeout=90, what="a third of the emails"
        )
        await rig.dev.stop()
        stopped_at = len(rig.smtp.messages)
        await asyncio.sleep(3)
        during = len(rig.smtp.messages) - stopped_at
        rig.client = await rig.dev.start()
        restarted = time.monotonic()
        await rig.all_finished(customers, timeout=180)
        report = await rig.assert_each_got_one_email(customers)
        print(
            f"\ndev server stopped after {stopped_at}/{CUSTOMERS} emails ({during} more while it was down); "
            f"all done {time.monotonic() - restarted:.0f}s after restart; {report}"
        )
    finally:
        worker.stop()


async def test_postgres_down_mid_run_503_then_every_event_routed_and_mailed_once(rig: Rig) -> None:
    customers = await rig.customers(CUSTOMERS)
    app = create_app(rig.settings, pool=rig.pool, client=rig.client)
    worker = rig.worker("worker")
    statuses: Counter[int] = Counter()
    accepted: set[str] = set()
    events = rig.events(customers)
    batches = [events[i : i + 10] for i in range(0, len(events), 10)]
    try:
        async with (
            run_drainer(app.state.router),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://parcours.test", headers={"X-API-Key": API_KEY}
            ) as http,
        ):

            async def post(batches: list[list[Event]]) -> None:
                # Like the Python client: a 503 (or a network error) is retried with the same event ids.
                for batch in batches:
                    body = {"events": [e.model_dump(mode="json") for e in batch]}
                    while True:
                        response = await http.post("/v1/events", json=body)
                        statuses[response.status_code] += 1
                        if response.status_code == 202:
                            for result in response.json()["results"]:
                                assert result["status"] in ("accepted", "duplicate"), result
                                accepted.add(result["event_id"])
                            break
                        assert response.status_code == 503, response.text
                        await asyncio.sleep(0.3)

            half = len(batches) // 2
            await post(batches[:half])
            await wait_until(
                lambda: _ready(len(rig.smtp.messages) >= CUSTOMERS // 4), timeout=90, what="a quarter of the emails"
            )
            await asyncio.to_thread(rig.postgres.stop)
            down_at = len(rig.smtp.messages)
            poster = asyncio.create_task(post(batches[half:]))  # the second half arrives while PostgreSQL is down
            await asyncio.sleep(6)
            during = len(rig.smtp.messages) - down_at
            await asyncio.to_thread(rig.postgres.start)
            await asyncio.wait_for(poster, 120)
            assert accepted == {e.event_id for e in events}
            await rig.all_finished(customers, timeout=180)

            async def all_routed() -> bool:
                unrouted = await rig.pool.fetchval(
                    "SELECT count(*) FROM events WHERE event_id = ANY($1::text[]) AND routed_at IS NULL",
                    list(accepted),
                )
                return unrouted == 0

            await wait_until(all_routed, timeout=60, what="every accepted event routed")
        report = await rig.assert_each_got_one_email(customers)
        assert statuses[503] > 0, f"the API was never asked while PostgreSQL was down: {statuses}"
        assert set(statuses) <= {202, 503}, statuses
        runs = await _runs_per_customer(rig, customers)
        print(
            f"\nPostgreSQL down after {down_at}/{CUSTOMERS} emails ({during} more while down); HTTP {dict(statuses)}; "
            f"{report}; workflow runs per id: {dict(Counter(runs.values()))}"
        )
    finally:
        worker.stop()


async def _runs_per_customer(rig: Rig, customers: list[str]) -> dict[str, int]:
    runs: Counter[str] = Counter()
    async for wf in rig.client.list_workflows(
        f"WorkflowType = 'JourneyWorkflow' AND TaskQueue = '{rig.settings.task_queue}'"
    ):
        runs[wf.id] += 1
    return {c: runs[f"{rig.journey_id}:{c}"] for c in customers}


async def _ready(value: bool) -> bool:
    return value


async def test_identify_while_temporal_is_down_hands_the_run_over_once_it_is_back(rig: Rig) -> None:
    """The merge commits at once; the visitor's run is told when the dev server answers again."""
    from contracts.journey import STATE_QUERY, JourneyState
    from store import identity as identity_store

    tag = uuid.uuid4().hex[:8]
    journey = parse_journey({
        "id": f"browse-{tag}", "name": f"Browse {tag}", "trigger": {"event": f"visit-{tag}"},
        "steps": [{"id": "later", "type": "wait", "duration": "1h"}],
    })  # fmt: skip
    await journey_store.publish(rig.pool, journey)
    visitor, customer = f"cookie-{tag}", f"cust-{tag}"
    run_id = f"{journey.id}:anon:{visitor}"
    worker = rig.worker("worker")
    try:
        [visit] = await rig.router().ingest([
            Event(event_id=f"ev-{tag}", customer_id=f"anon:{visitor}", name=journey.trigger.event,
                  occurred_at=datetime.now(UTC), anonymous_id=visitor)
        ])  # fmt: skip
        assert visit.routed

        async def state() -> JourneyState | None:  # answered by the worker process: it is up and connected
            try:
                return await rig.client.get_workflow_handle(run_id).query(
                    STATE_QUERY, result_type=JourneyState, rpc_timeout=timedelta(seconds=5)
                )
            except RPCError:
                return None

        await wait_until(state, timeout=60, what=f"the worker answering; log:\n{worker.log_tail()}")
        await rig.dev.stop()

        result = await identity_store.identify(
            rig.pool, customer, [identity_store.Link("anonymous_id", visitor, "anonymous_ids[0]")], source="signup"
        )
        started = time.monotonic()
        await rig.router().notify_merges(result.merges)  # fails quietly: Temporal is down
        assert time.monotonic() - started < 30
        [merge] = await identity_store.merges(rig.pool, customer)
        assert merge["notified_at"] is None and [r["status"] for r in merge["runs"]] == ["pending"]

        rig.client = await rig.dev.start()
        router = rig.router()
        await wait_until(lambda: router.drain_once(min_age=timedelta(0)), timeout=60, what="the merge told")
        [merge] = await identity_store.merges(rig.pool, customer)
        assert [r["status"] for r in merge["runs"]] == ["adopted"]
        # The worker process reconnects to the restarted server first.
        told = await wait_until(state, timeout=90, what=f"the worker answering again; log:\n{worker.log_tail()}")
        assert (told.customer_id, told.entered_as, told.status) == (customer, f"anon:{visitor}", "running")
        await rig.client.get_workflow_handle(run_id).terminate("test over")
    finally:
        worker.stop()
