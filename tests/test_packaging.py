"""What gets installed and imported: production commands run without the local stack, and the distribution
ships every package of the server."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION = """
import json, sys
import api.server, workers.process, workers.__main__
from cli.main import app
for args in (["--help"], ["api", "--help"], ["worker", "--help"], ["migrate", "--help"], ["migrate"]):
    try:
        app(args)
    except SystemExit as exit:
        assert exit.code == 0, (args, exit.code)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "devstack")))
"""


def test_production_commands_do_not_import_the_local_stack(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(PARCOURS_DATABASE_URL=database_url, PARCOURS_OTEL_EXPORTER="none", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", PRODUCTION], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The schema is up to date." in result.stdout  # `parcours migrate` ran for real
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_distribution_lists_every_package_of_the_server() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert {p for p in packages if not any(fnmatch.fnmatch(p, pattern) for pattern in include)} == set()
    assert not any(fnmatch.fnmatch(name, pattern) for name in ("tests", "bench") for pattern in include)
