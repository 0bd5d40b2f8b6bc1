"""``parcours ops`` against the dev server, with real broken runs: a webhook that refuses, a template that cannot
render for one customer, a workflow whose task keeps failing (a bug in new code), a workflow change that breaks
replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts import search_attributes as sa
from contracts.journey import WORKFLOW_NAME
from store import reports
from tests.support import broken_workflows
from tests.support.broken_workflows import BuggyJourney
from tests.support.engine import journey_from, make_customer, running_engine
from tests.support.mail import SmtpSink
from tests.support.stack import eventually
from tests.support.temporal import task_queue
from tests.support.webhooks import Reply, WebhookSink

ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class Result:
    exit_code: int
    output: str


@dataclass(frozen=True)
class Cli:
    env: dict[str, str]


@pytest.fixture
def cli(database_url: str, dev_env: WorkflowEnvironment, tmp_path: Path) -> Cli:
    env = {
        **os.environ,
        "PARCOURS_DATABASE_URL": database_url,
        "PARCOURS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "PARCOURS_TEMPORAL_UI_URL": "http://ui.example",
        "PARCOURS_DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "250",
    }
    return Cli(env)


async def invoke(cli: Cli, *args: str, workflows: str | None = None) -> Result:
    """Run ``parcours ARGS`` as its own process (the command runs its own event loop and Temporal client).

    ``workflows``: the dotted name of a list of workflow classes that replaces the worker's (a changed deployment).
    """
    if workflows:
        module, name = workflows.rsplit(".", 1)
        code = f"import {module}, workers.worker as w; w.WORKFLOWS = {module}.{name}; from cli.main import app; app()"
    else:
        code = "from cli.main import app; app()"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, env=cli.env, cwd=ROOT, stdout=PIPE, stderr=STDOUT
    )
    out, _ = await process.communicate()
    return Result(process.returncode or 0, out.decode())


# A template that renders for most customers and fails for one whose profile makes it divide by zero.
UNRENDERABLE = "{% if customer.share != nil %}{{ 100 | divided_by: customer.share }}{% endif %}"


def scoring(url: str) -> dict[str, Any]:
    return {
        "id": "ops",
        "name": "Ops",
        "trigger": {"event": "signed_up"},
        "steps": [
            {"id": "score", "type": "webhook", "url": url, "body": {"c": "{{ customer.id }}"}, "on_failure": "hello"},
            {"id": "hello", "type": "send", "channel": "email", "template": {"subject": UNRENDERABLE, "text": "x"}},
        ],
    }


@contextlib.asynccontextmanager
async def stuck_run(client: Client, journey_id: str, customer_id: str) -> AsyncIterator[str]:
    queue = task_queue()
    async with Worker(client, task_queue=queue, workflows=[BuggyJourney]):
        workflow_id = f"{journey_id}:{customer_id}"
        await client.start_workflow(
            WORKFLOW_NAME,
            {"not": "read"},
            id=workflow_id,
            task_queue=queue,
            search_attributes=sa.at_start(journey_id, customer_id, 1, "score"),
        )
        yield workflow_id


def test_the_broken_workflows_stand_in_for_the_journey_workflow() -> None:
    assert broken_workflows.WORKFLOW_NAME == WORKFLOW_NAME


async def test_failures_lists_failed_steps_and_stuck_runs_with_reason_and_link(
    cli: Cli, dev_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    journey = journey_from(scoring(webhook_sink.url))
    webhook_sink.set_default(Reply(400, {"error": "unknown plan"}))
    fine = await make_customer(pool, attributes={"share": 4})
    broken = await make_customer(pool, attributes={"share": 0})
    async with running_engine(dev_env, pool, smtp_sink) as engine:
        for customer in (fine, broken):
            await (await engine.enter(journey, customer)).result()
        async with stuck_run(dev_env.client, journey.id, "cust-stuck") as stuck_id:

            async def listed() -> Result:
                result = await invoke(cli, "ops", "failures", "--journey", journey.id, "--since", "1d")
                assert result.output.count(journey.id) >= 3 and "stuck " in result.output, result.output
                return result

            result = await eventually(listed, timeout=30)

    assert result.exit_code == 1  # something is broken: a pipeline can act on it
    lines = result.output.splitlines()
    fine_line = next(line for line in lines if line.startswith(f"step_failed {journey.id}:{fine} "))
    assert "step=score" in fine_line and "400" in fine_line
    assert f"http://ui.example/namespaces/default/workflows/{journey.id}%3A{fine}/" in fine_line
    broken_line = next(line for line in lines if line.startswith(f"step_failed {journey.id}:{broken} "))
    assert "step=hello" in broken_line and "template_error" in broken_line
    stuck_line = next(line for line in lines if line.startswith(f"stuck {stuck_id} "))
    assert "bug in new code" in stuck_line
    assert "Traceback" not in result.output
    assert [m["Subject"] for m in engine.mail_to(fine)] == ["25"]  # the journey went on past the failed webhook


async def test_failures_of_a_journey_without_any(cli: Cli) -> None:
    result = await invoke(cli, "ops", "failures", "--journey", f"nothing-{uuid.uuid4().hex[:6]}")
    assert result.exit_code == 0, result.output
    assert "No failures." in result.output


async def test_failures_rejects_a_malformed_since(cli: Cli) -> None:
    result = await invoke(cli, "ops", "failures", "--since", "yesterday")
    assert result.exit_code == 2
    assert "--since" in result.output and "'yesterday': use a number" in result.output
    assert "Traceback" not in result.output


async def test_replay_passes_on_todays_code_and_names_the_runs_a_change_breaks(
    cli: Cli,
    dev_env: WorkflowEnvironment,
    pool: asyncpg.Pool,
    smtp_sink: SmtpSink,
    webhook_sink: WebhookSink,
    tmp_path: Path,
) -> None:
    journey = journey_from(scoring(webhook_sink.url))
    customers = [await make_customer(pool, attributes={"share": 2}) for _ in range(2)]
    async with running_engine(dev_env, pool, smtp_sink) as engine:
        for customer in customers:
            await (await engine.enter(journey, customer)).result()
    query = f'{sa.JOURNEY_ID.name} = "{journey.id}"'

    async def replayed() -> Result:
        result = await invoke(cli, "ops", "replay", "--query", query, "--save", str(tmp_path / "corpus"))
        assert "2 run(s) replayed" in result.output, result.output
        return result

    today = await eventually(replayed, timeout=15)
    assert today.exit_code == 0, today.output
    assert "0 diverge" in today.output
    assert len(list((tmp_path / "corpus").glob("*.json"))) == 2

    changed = await invoke(cli, "ops", "replay", "--query", query, workflows="tests.support.broken_workflows.CHANGED")
    assert changed.exit_code == 1, changed.output
    assert "2 run(s) replayed, 2 diverge" in changed.output
    for customer in customers:
        line = next(line for line in changed.output.splitlines() if f"{journey.id}:{customer}" in line)
        assert "diverges" in line and "nondetermin" in line.lower()


async def test_reset_lists_with_a_dry_run_then_resets_and_the_store_keeps_both_attempts(
    cli: Cli, dev_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    journey = journey_from(
        {
            "id": f"reset-{uuid.uuid4().hex[:8]}",
            "name": "Reset",
            "trigger": {"event": "signed_up"},
            "steps": [
                {"id": "hello", "type": "send", "channel": "email", "template": {"subject": UNRENDERABLE, "text": "x"}}
            ],
        }
    )
    broken = await make_customer(pool, attributes={"share": 0})
    wid = f"{journey.id}:{broken}"
    async with running_engine(dev_env, pool, smtp_sink) as engine:
        await (await engine.enter(journey, broken)).result()
        first_run = (await dev_env.client.get_workflow_handle(wid).describe()).run_id

        dry = await invoke(
            cli, "ops", "reset", "--workflow-id", wid, "--to", "first-task", "--reason", "x", "--dry-run"
        )
        assert dry.exit_code == 0, dry.output
        assert f"{wid} ({first_run}, completed): to event " in dry.output and "(dry run)" in dry.output
        assert (await dev_env.client.get_workflow_handle(wid).describe()).run_id == first_run  # nothing was reset

        done = await invoke(
            cli, "ops", "reset", "--workflow-id", wid, "--to", "first-task", "--reason", "template fixed", "--yes"
        )
        assert done.exit_code == 0, done.output
        new_run = done.output.strip().splitlines()[-1].rsplit("new run ", 1)[1]
        assert new_run != first_run
        await dev_env.client.get_workflow_handle(wid, run_id=new_run).result()

    attempts = await pool.fetch(
        "SELECT run_id, outcome, superseded_at IS NOT NULL AS superseded FROM step_outcomes"
        " WHERE workflow_id = $1 AND step_id = 'hello' ORDER BY id",
        wid,
    )
    assert [tuple(r) for r in attempts] == [(first_run, "failed", True), (new_run, "failed", False)]
    messages = await pool.fetchval("SELECT count(*) FROM messages WHERE journey_id = $1", journey.id)
    assert messages == 1  # the re-run send found its recorded message
    action = await pool.fetchrow("SELECT actor, reason, detail FROM ops_actions WHERE target = $1", wid)
    assert action["reason"] == "template fixed" and action["actor"].startswith("cli")
    assert (action["detail"]["run_id"], action["detail"]["new_run_id"]) == (first_run, new_run)


async def test_reset_needs_exactly_one_target(cli: Cli) -> None:
    result = await invoke(cli, "ops", "reset", "--to", "last-task", "--reason", "x")
    assert result.exit_code != 0 and "exactly one of --query and --workflow-id" in result.output


async def test_reset_to_a_failed_step_runs_that_step_again_and_sends_nothing_twice(
    cli: Cli, dev_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    journey = journey_from({**scoring(webhook_sink.url), "id": f"step-{uuid.uuid4().hex[:8]}"})
    webhook_sink.set_default(Reply(400, {"error": "unknown plan"}))
    customer = await make_customer(pool, attributes={"share": 4})
    wid = f"{journey.id}:{customer}"
    async with running_engine(dev_env, pool, smtp_sink) as engine:
        await (await engine.enter(journey, customer)).result()
        first_run = (await dev_env.client.get_workflow_handle(wid).describe()).run_id
        assert await engine.outcomes(customer) == {"score": "failed", "hello": "sent"}
        calls = len(webhook_sink.requests)

        args = ("ops", "reset", "--workflow-id", wid, "--to", "step", "score", "--reason", "plan added")
        dry = await invoke(cli, *args, "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert f"{wid} ({first_run}, completed): to event " in dry.output and "(step score)" in dry.output
        nowhere = await invoke(cli, "ops", "reset", "--workflow-id", wid, "--to", "step", "nope", "--reason", "x")
        assert "cannot: step 'nope' never started in this run" in nowhere.output, nowhere.output

        webhook_sink.set_default(Reply(200, {"plan": "gold"}))  # the endpoint is fixed
        done = await invoke(cli, *args, "--yes")
        assert done.exit_code == 0, done.output
        new_run = done.output.strip().splitlines()[-1].rsplit("new run ", 1)[1]
        await dev_env.client.get_workflow_handle(wid, run_id=new_run).result()

    assert len(webhook_sink.requests) == calls + 1  # the webhook step ran again, once
    attempts = await pool.fetch(
        "SELECT run_id, outcome, superseded_at IS NOT NULL AS superseded FROM step_outcomes"
        " WHERE workflow_id = $1 AND step_id = 'score' ORDER BY id",
        wid,
    )
    assert [tuple(r) for r in attempts] == [(first_run, "failed", True), (new_run, "ok", False)]
    assert await engine.outcomes(customer) == {"score": "ok", "hello": "sent"}
    assert len(engine.mail_to(customer)) == 1  # the email the first run sent is not sent again


async def test_reset_to_a_step_needs_the_step(cli: Cli) -> None:
    result = await invoke(cli, "ops", "reset", "--workflow-id", "w", "--to", "step", "--reason", "x")
    assert result.exit_code == 2 and "name the step: --to step STEP" in result.output, result.output


async def test_reset_by_query_runs_one_batch_job_and_logs_it_with_the_query(
    cli: Cli, dev_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    journey = journey_from({**scoring(webhook_sink.url), "id": f"batch-{uuid.uuid4().hex[:8]}"})
    webhook_sink.set_default(Reply(400, {"error": "unknown plan"}))
    customers = [await make_customer(pool, attributes={"share": 4}) for _ in range(3)]
    query = f'{sa.JOURNEY_ID.name} = "{journey.id}"'
    args = ("ops", "reset", "--query", query, "--to", "first-task", "--reason", "plans added")
    async with running_engine(dev_env, pool, smtp_sink) as engine:
        for customer in customers:
            await (await engine.enter(journey, customer)).result()
        first_runs = {
            c: (await dev_env.client.get_workflow_handle(f"{journey.id}:{c}").describe()).run_id for c in customers
        }

        async def listed() -> Result:
            result = await invoke(cli, *args, "--dry-run")
            assert "3 run(s) would be reset (dry run)" in result.output, result.output
            return result

        dry = await eventually(listed, timeout=15)
        for customer in customers:
            assert f"{journey.id}:{customer} ({first_runs[customer]}, completed): to event " in dry.output

        webhook_sink.set_default(Reply(200, {"plan": "gold"}))
        done = await invoke(cli, *args, "--yes")
        assert done.exit_code == 0, done.output
        assert "completed, 3 of 3 run(s) reset, 0 failed." in done.output

        for customer in customers:
            handle = dev_env.client.get_workflow_handle(f"{journey.id}:{customer}")
            assert (await handle.describe()).run_id != first_runs[customer]
            await handle.result()

    for customer in customers:
        assert await engine.outcomes(customer) == {"score": "ok", "hello": "sent"}
        assert len(engine.mail_to(customer)) == 1
    [action] = await pool.fetch("SELECT actor, reason, detail FROM ops_actions WHERE target = $1", query)
    assert action["reason"] == "plans added" and action["actor"].startswith("cli")
    assert action["detail"]["job_id"] in done.output and len(action["detail"]["runs"]) == 3


async def test_a_message_refused_before_a_reset_is_sent_by_the_reset_run_and_only_once(
    cli: Cli, dev_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    journey = journey_from(
        {
            "id": f"resend-{uuid.uuid4().hex[:8]}",
            "name": "Resend",
            "trigger": {"event": "signed_up"},
            "steps": [{"id": "hello", "type": "send", "channel": "email", "template": {"subject": "Hi", "text": "x"}}],
        }
    )
    customer = await make_customer(pool)
    wid = f"{journey.id}:{customer}"
    reset = ("ops", "reset", "--workflow-id", wid, "--to", "step", "hello", "--reason", "mail relay back", "--yes")
    smtp_sink.fail("554 5.3.0 Relay down", times=1)  # the provider refuses this one message, then works again
    async with running_engine(dev_env, pool, smtp_sink) as engine:
        await (await engine.enter(journey, customer)).result()
        first_run = (await dev_env.client.get_workflow_handle(wid).describe()).run_id
        assert await engine.outcomes(customer) == {"hello": "failed"}
        assert engine.mail_to(customer) == []

        done = await invoke(cli, *reset)
        assert done.exit_code == 0, done.output
        new_run = done.output.strip().splitlines()[-1].rsplit("new run ", 1)[1]
        await dev_env.client.get_workflow_handle(wid, run_id=new_run).result()
        assert await engine.outcomes(customer) == {"hello": "sent"}
        assert len(engine.mail_to(customer)) == 1

        again = await invoke(cli, *reset)  # a second reset finds the message sent: nobody is mailed twice
        assert again.exit_code == 0, again.output
        await dev_env.client.get_workflow_handle(wid).result()

    assert len(engine.mail_to(customer)) == 1
    [message] = await pool.fetch(
        "SELECT status, run_id, earlier_attempts FROM messages WHERE journey_id = $1", journey.id
    )
    assert (message["status"], message["run_id"]) == ("sent", new_run)
    [earlier] = message["earlier_attempts"]
    assert (earlier["run_id"], earlier["status"], earlier["reason"]) == (first_run, "failed", "provider_rejected")
    [count] = await reports.message_counts(pool, reports.Filters(journey_id=journey.id))
    assert (count.messages, count.sent, count.failed) == (1, 1, 0)  # the report counts the current attempt
