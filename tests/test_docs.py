"""The README is the operator's manual: every setting must be in its configuration table."""

from __future__ import annotations

from pathlib import Path

from config.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_documented_with_its_environment_variable() -> None:
    table = README.split("<!-- settings-table", 1)[1]
    missing = [
        name
        for name in Settings.model_fields
        if f"| `{name}` |" not in table or f"PARCOURS_{name.upper()}" not in table
    ]
    assert missing == []


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README
