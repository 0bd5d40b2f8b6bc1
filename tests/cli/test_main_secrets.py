"""``parcours api`` and ``parcours worker`` refuse to start with public secrets, one line per setting."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app

SECRETS = ("PARCOURS_API_KEYS", "PARCOURS_LINK_SECRET", "PARCOURS_WEBHOOK_SECRET")


@pytest.mark.parametrize("command", ["api", "worker"])
def test_production_commands_refuse_the_dev_secrets(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    # Nothing is reachable there: the command must stop before trying to connect.
    monkeypatch.setenv("PARCOURS_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("PARCOURS_TEMPORAL_ADDRESS", "127.0.0.1:1")
    result = CliRunner().invoke(app, [command])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert [line.split()[1] for line in lines] == list(SECRETS)


def test_a_production_command_with_only_a_public_link_secret_names_that_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARCOURS_API_KEYS", '[{"key": "k-5e1b0c7d", "role": "admin"}]')
    monkeypatch.setenv("PARCOURS_LINK_SECRET", "change-me")
    monkeypatch.setenv("PARCOURS_WEBHOOK_SECRET", "whsec_b3duLXNlY3JldC1mb3ItdGVzdHM=")
    monkeypatch.setenv("PARCOURS_TEMPORAL_ADDRESS", "127.0.0.1:1")
    result = CliRunner().invoke(app, ["api"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].split()[1] == "PARCOURS_LINK_SECRET"
