"""``parcours broadcasts ...`` and ``parcours journeys preview`` in process (typer's CliRunner) against the
session's PostgreSQL and the dev server."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from cli.main import app
from journeys import parse_journey
from store import create_pool
from store import journeys as journey_store

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
