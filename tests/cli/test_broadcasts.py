"""``parcours broadcasts ...`` and ``parcours journeys preview|test-send`` in process (typer's CliRunner) against the
session's PostgreSQL and the dev server."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from click.testing import Result
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from cli.main import app
from journeys import parse_journey
from store import create_pool
from store import devices as device_store
from store import journeys as journey_store
from tests.support.providers import FcmFake, running

pytestmark = pytest.mark.devserver


@pytest.fixture
def cli(database_url: str, dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("PARCOURS_DATABASE_URL", database_url)
    monkeypatch.setenv("PARCOURS_TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("PARCOURS_TASK_QUEUE", f"cli-{uuid.uuid4().hex[:8]}")  # no worker: nothing is sent
    monkeypatch.setenv("PARCOURS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def _customer(database_url: str, consent: str) -> str:
    customer_id = f"cli-{uuid.uuid4().hex[:10]}"

    async def main() -> None:
        conn = await create_pool(database_url, min_size=1, max_size=1)
        try:
            await conn.execute(
                "INSERT INTO customers (id, email, attributes) VALUES ($1, $2, $3)",
                customer_id,
                f"{customer_id}@example.com",
                {"first_name": "Grace"},
            )
            await conn.execute(
                "INSERT INTO consent_events (customer_id, scope, name, status, source)"
                " VALUES ($1, 'channel', 'email', $2, 'test')",
                customer_id,
                consent,
            )
            journey = parse_journey(
                {
                    "id": "cli-preview",
                    "name": "CLI preview",
                    "trigger": {"event": "cli_signup"},
                    "steps": [
                        {
                            "id": "hello",
                            "type": "send",
                            "channel": "email",
                            "template": {"subject": "Hi {{ customer.first_name }} ({{ event.plan }})", "text": "t"},
                        }
                    ],
                }
            )
            await journey_store.publish(conn, journey)
        finally:
            await conn.close()

    asyncio.run(main())
    return customer_id


def test_journeys_preview_prints_the_rendering_and_the_decision(cli: CliRunner, database_url: str) -> None:
    granted = _customer(database_url, "granted")
    shown = cli.invoke(app, ["journeys", "preview", "cli-preview", "hello", granted, "--prop", "plan=pro"])
    assert shown.exit_code == 0, shown.output
    assert "would send on email" in shown.output and "Hi Grace (pro)" in shown.output
    withdrawn = _customer(database_url, "withdrawn")
    shown = cli.invoke(app, ["journeys", "preview", "cli-preview", "hello", withdrawn])
    assert "would skip because consent_withdrawn:email" in shown.output
    assert "Hi Grace ()" in shown.output and "email: empty for this customer: event.plan" in shown.output
    missing = cli.invoke(app, ["journeys", "preview", "cli-preview", "nope", granted])
    assert missing.exit_code == 1 and "has no step 'nope'" in missing.output


def test_broadcasts_create_show_and_cancel(cli: CliRunner, tmp_path: Path) -> None:
    broadcast_id = f"cli-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "broadcast.yaml"
    path.write_text(
        f"""
id: {broadcast_id}
segment: {{where: [{{field: profile.tag, op: eq, value: nobody-{broadcast_id}}}]}}
channel: email
template: {{subject: Sale, text: "20% off"}}
send_at: {{local: "2030-12-05T10:00"}}
"""
    )
    created = cli.invoke(app, ["broadcasts", "create", str(path)])
    assert created.exit_code == 0, created.output
    assert f"broadcast {broadcast_id} created: scheduled" in created.output
    cancelled = cli.invoke(app, ["broadcasts", "cancel", broadcast_id])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output, cancelled.output
    shown = cli.invoke(app, ["broadcasts", "show", broadcast_id])
    assert shown.exit_code == 0 and f"{broadcast_id} (cancelled)" in shown.output, shown.output
    again = cli.invoke(app, ["broadcasts", "create", str(path)])
    assert again.exit_code == 1 and "exists already" in again.output
    path.write_text("segment: {ref: vip}\nchannel: fax\n")
    wrong = cli.invoke(app, ["broadcasts", "create", str(path)])
    assert wrong.exit_code == 1 and "fax" in wrong.output


@pytest.fixture
def push_cli(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """The CLI with the devices push adapter; no Temporal (a test send needs none). FCM's settings are the test's."""
    monkeypatch.setenv("PARCOURS_DATABASE_URL", database_url)
    monkeypatch.setenv("PARCOURS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PARCOURS_CHANNEL_PUSH", "devices")
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


async def test_test_send_commands_send_a_push_to_the_device_given_and_print_the_answer(
    push_cli: CliRunner, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    customer_id = f"cli-{uuid.uuid4().hex[:10]}"
    await pool.execute("INSERT INTO customers (id, attributes) VALUES ($1, $2)", customer_id, {"first_name": "Grace"})
    await device_store.put_device(
        pool, customer_id, "own", platform="fcm", token="tok-dead", subscription=None, app=None, locale=None
    )
    journey_id = f"cli-push-{uuid.uuid4().hex[:8]}"
    push = {"title": "Hi {{ customer.first_name }}", "body": "{{ event.plan }} awaits"}
    journey = {"id": journey_id, "name": "CLI push", "trigger": {"event": "cli_push"}}
    step = {"id": "nudge", "type": "send", "channel": "push", "template": push}
    await journey_store.publish(pool, parse_journey({**journey, "steps": [step]}))
    broadcast = tmp_path / "broadcast.yaml"
    broadcast.write_text("segment: {}\nchannel: push\ntemplate: {title: 'Sale, {{ customer.first_name }}', body: b}\n")

    async with running(FcmFake()) as fcm:
        fcm.dead_tokens.add("tok-dead")
        monkeypatch.setenv("PARCOURS_FCM_PROJECT_ID", fcm.project_id)
        monkeypatch.setenv("PARCOURS_FCM_SERVICE_ACCOUNT_FILE", str(fcm.service_account_file(tmp_path)))
        monkeypatch.setenv("PARCOURS_FCM_BASE_URL", fcm.url)

        async def invoke(*args: str) -> Result:
            return await asyncio.to_thread(push_cli.invoke, app, list(args))  # the fake serves on this loop

        device = ["--device-platform", "fcm", "--device-token"]
        sent = await invoke("journeys", "test-send", journey_id, "nudge", customer_id, "-p", "plan=pro", *device, "qa")
        assert sent.exit_code == 0, sent.output
        assert "test sent on push to fcm device qa, marked [TEST] (provider message id projects/" in sent.output
        assert [(m["token"], m["notification"]) for m in fcm.sent] == [
            ("qa", {"title": "[TEST] Hi Grace", "body": "pro awaits"})
        ]
        sent = await invoke("broadcasts", "test-send", customer_id, "--file", str(broadcast), *device, "qa")
        assert sent.exit_code == 0 and "test sent on push to fcm device qa" in sent.output, sent.output
        assert fcm.sent[-1]["notification"]["title"] == "[TEST] Sale, Grace"

        dead = await invoke("journeys", "test-send", journey_id, "nudge", customer_id, *device, "tok-dead")
        assert dead.exit_code == 1
        assert "the test on push to fcm device tok-dead failed: UNREGISTERED (FCM answered 404" in dead.output
        wrong = await invoke("journeys", "test-send", journey_id, "nudge", customer_id, "--device-platform", "fcm")
        assert wrong.exit_code == 1 and "device.token: required for platform 'fcm'" in wrong.output, wrong.output
        unset = await invoke("journeys", "test-send", journey_id, "nudge", customer_id, "--device-platform", "apns",
                             "--device-token", "ab" * 32)  # fmt: skip
        assert unset.exit_code == 1 and "set PARCOURS_APNS_KEY_FILE" in unset.output, unset.output
        neither = await invoke("broadcasts", "test-send", customer_id, *device, "qa")
        assert neither.exit_code == 1 and "give either --id" in neither.output
    assert len(fcm.sent) == 2
    own = await device_store.get_device(pool, customer_id, "own")
    assert own is not None and own.active  # the dead answer for the test token changed no stored device
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE customer_id = $1", customer_id) == 0
