"""The ``parcours`` command: fast in-process tests with typer's CliRunner, and ``parcours dev`` as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from cli.main import app
from tests.support.mail import SmtpSink, free_port
from tests.support.temporal import binary

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "journeys" / "examples" / "welcome-series.yaml"

INVALID = """\
id: broken
name: Broken
trigger:
  event: signed_up
steps:
  - id: hello
    type: send
    channel: pigeon
    template:
      text: hi
  - id: pause
    type: wait
  - id: check
    type: wait_for
    event: clicked
    timeout: 1d
    on_event: nowhere
"""


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("PARCOURS_DATABASE_URL", database_url)
    monkeypatch.setenv("PARCOURS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def _journey_file(tmp_path: Path, journey_id: str) -> Path:
    path = tmp_path / f"{journey_id}.yaml"
    path.write_text(EXAMPLE.read_text().replace("id: welcome-series", f"id: {journey_id}", 1))
    return path


def test_publish_invalid_file_lists_every_issue_by_step_and_field(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(INVALID)
    good = _journey_file(tmp_path, f"j-{uuid.uuid4().hex[:8]}")

    result = cli.invoke(app, ["journeys", "publish", str(good), str(bad)])

    assert result.exit_code == 1, result.output
    out = result.output
    assert "steps[0] (id 'hello').channel: unknown channel 'pigeon'" in out
    assert "steps[1] (id 'pause').duration" in out
    assert "nothing published" in out
    assert "Traceback" not in out
    # All or nothing: the valid file in the same call was not published.
    listed = cli.invoke(app, ["journeys", "list"])
    assert good.stem not in listed.output


def test_publish_unknown_step_reference_names_the_field(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "dangling.yaml"
    bad.write_text(
        INVALID.replace("channel: pigeon", "channel: sms").replace(
            "    type: wait\n", "    type: wait\n    duration: 1h\n"
        )
    )

    result = cli.invoke(app, ["journeys", "publish", str(bad)])

    assert result.exit_code == 1, result.output
    assert "steps[2] (id 'check').on_event: unknown step 'nowhere'" in result.output


def test_publish_then_list_and_republish_unchanged(cli: CliRunner, tmp_path: Path) -> None:
    journey_id = f"j-{uuid.uuid4().hex[:8]}"
    path = _journey_file(tmp_path, journey_id)

    first = cli.invoke(app, ["journeys", "publish", str(path)])
    assert first.exit_code == 0, first.output
    assert f"{journey_id} v1 published" in first.output

    again = cli.invoke(app, ["journeys", "publish", str(path)])
    assert again.exit_code == 0, again.output
    assert f"{journey_id} v1 unchanged" in again.output

    listed = cli.invoke(app, ["journeys", "list"])
    assert listed.exit_code == 0, listed.output
    assert journey_id in listed.output


def test_publishing_a_segment_journey_creates_its_schedule(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dev_env: WorkflowEnvironment
) -> None:
    address = dev_env.client.service_client.config.target_host
    monkeypatch.setenv("PARCOURS_TEMPORAL_ADDRESS", address)
    journey_id = f"seg-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "segment.yaml"
    path.write_text(
        f"""
id: {journey_id}
name: Lapsed customers
entry:
  segment:
    every: 1d
    events: [{{event: order_placed, within: 60d, count: none}}]
steps:
  - {{id: hello, type: send, channel: email, template: {{subject: We miss you, text: Come back}}}}
"""
    )
    published = cli.invoke(app, ["journeys", "publish", str(path)])
    assert published.exit_code == 0, published.output
    described = subprocess.run(
        [
            binary("temporal"),
            "schedule",
            "describe",
            "--schedule-id",
            f"segment:{journey_id}",
            "--address",
            address,
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert described.returncode == 0, described.stderr
    assert "SegmentEntryWorkflow" in described.stdout


def test_missing_file_and_missing_database_are_one_line_errors(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli.invoke(app, ["journeys", "publish", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read" in result.output

    monkeypatch.delenv("PARCOURS_DATABASE_URL")
    result = cli.invoke(app, ["journeys", "list"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: no database")
    assert "Traceback" not in result.output


# parcours dev as a subprocess


def _dev_env(data_dir: Path, ports: dict[str, int], smtp_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARCOURS_", "TEMPORAL_"))}
    env.update(
        PARCOURS_DATA_DIR=str(data_dir),
        PARCOURS_TEMPORAL_PORT=str(ports["temporal"]),
        PARCOURS_TEMPORAL_UI_PORT=str(ports["ui"]),
        PARCOURS_API_PORT=str(ports["api"]),
        PARCOURS_SMTP_HOST="127.0.0.1",
        PARCOURS_SMTP_PORT=str(smtp_port),
        PARCOURS_LOG_LEVEL="WARNING",
        PARCOURS_OTEL_EXPORTER="none",
    )
    return env


def _start_dev(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "dev"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def _wait_ready(http: httpx.AsyncClient, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"parcours dev exited with {proc.returncode}:\n{log.read_text()}"
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.25)
    raise AssertionError(f"parcours dev not ready within {timeout}s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> dict[int, tuple[str, psutil.Process]]:
    """SIGINT, wait for the exit; return the descendants that were alive before, by pid, with their names."""
    children = {}
    for child in psutil.Process(proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            children[child.pid] = (child.name(), child)
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"parcours dev did not stop within {timeout}s:\n{log.read_text()}") from None
    assert code == 0, log.read_text()
    return children


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _postgres_of(data_dir: Path) -> psutil.Process | None:
    pid_file = data_dir / "postgres" / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().splitlines()[0])
    return psutil.Process(pid) if psutil.pid_exists(pid) else None


@pytest.mark.timeout(120)
async def test_parcours_dev_runs_stops_cleanly_and_resumes(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    data_dir = tmp_path / "data"
    ports = {"temporal": free_port(), "ui": free_port(), "api": free_port()}
    env = _dev_env(data_dir, ports, smtp_sink.port)
    log = tmp_path / "dev.log"
    customer = f"c-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": "Bearer dev-key"}

    proc = _start_dev(env, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}", headers=headers) as http:
            await _wait_ready(http, proc, log)
            postgres = _postgres_of(data_dir)
            assert postgres is not None and postgres.is_running()
            journeys = (await http.get("/v1/journeys")).json()
            assert "welcome-series" in {j["id"] for j in journeys}, journeys

            r = await http.put(f"/v1/customers/{customer}", json={"email": f"{customer}@example.com"})
            assert r.status_code == 200, r.text
            r = await http.put(f"/v1/customers/{customer}/consent", json={"channels": {"email": "granted"}})
            assert r.status_code == 200, r.text
            r = await http.post("/v1/events", json={"customer_id": customer, "name": "signed_up"})
            assert r.status_code == 202, r.text

            [mail] = await smtp_sink.wait_for(1, timeout=20)
            assert mail.rcpt_tos == [f"{customer}@example.com"]
            assert "Welcome" in mail.message["Subject"]
    finally:
        if proc.poll() is None:
            children = _stop(proc, log)
        else:
            children = {}

    names = [name for name, _ in children.values()]
    assert "temporal" in names, f"the temporal dev server was not a child: {names}"
    # A helper that exits on its parent's exit (multiprocessing's fork server) may take a moment: a few seconds'
    # grace, then anything alive is a leak.
    psutil.wait_procs([child for _, child in children.values()], timeout=5)
    survivors = [(pid, name) for pid, (name, child) in children.items() if _alive(child)]
    assert not survivors, f"still running after parcours dev stopped: {survivors}"
    assert not _alive(postgres), "PostgreSQL still runs after parcours dev stopped"
    assert (data_dir / "temporal.db").exists()

    # Again on the same data dir: the journey run and the customer are still there.
    proc = _start_dev(env, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}", headers=headers) as http:
            await _wait_ready(http, proc, log)
            r = await http.get(f"/v1/customers/{customer}")
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 10
            runs: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                runs = (await http.get(f"/v1/customers/{customer}/journeys")).json()
                if runs:
                    break
                await asyncio.sleep(0.25)
            assert [run["workflow_id"] for run in runs] == [f"welcome-series:{customer}"], runs
            assert runs[0]["status"] == "running"
            assert runs[0]["step"] == "wait-2-days"
    finally:
        if proc.poll() is None:
            _stop(proc, log)
    assert len(smtp_sink.messages) == 1, "the resumed stack sent the welcome email again"


def test_dev_names_the_port_in_use_and_its_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("PARCOURS_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("PARCOURS_API_PORT", str(port))
        monkeypatch.setenv("PARCOURS_TEMPORAL_PORT", str(free_port()))
        monkeypatch.setenv("PARCOURS_TEMPORAL_UI_PORT", str(free_port()))

        result = CliRunner().invoke(app, ["dev"])

    assert result.exit_code == 1, result.output
    assert f"port {port}" in result.output
    assert "PARCOURS_API_PORT" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "data" / "postgres").exists(), "nothing should start when a port is taken"


def test_a_visitor_event_then_identify_and_show_from_the_command_line(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, dev_env: WorkflowEnvironment
) -> None:
    monkeypatch.setenv("PARCOURS_TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    tag = uuid.uuid4().hex[:8]
    visitor, customer = f"cookie-{tag}", f"cust-{tag}"
    sent = cli.invoke(app, ["events", "send", visitor, "page_viewed", "--anonymous", "-p", "path=/sale"])
    assert sent.exit_code == 0, sent.output
    assert f"page_viewed for anon:{visitor}: accepted" in sent.output

    identified = cli.invoke(
        app, ["customers", "identify", customer, "-a", visitor, "--email", f"{tag}@example.com", "--source", "support"]
    )
    assert identified.exit_code == 0, identified.output
    assert f"{customer}: created, 2 new link(s)" in identified.output
    assert f"anonymous_id {visitor}: moved {{'events': 1}}" in identified.output

    shown = cli.invoke(app, ["customers", "show", f"anon:{visitor}"])
    assert shown.exit_code == 0, shown.output
    assert f"anon:{visitor} was merged into {customer}" in shown.output
    assert "Aliases" in shown.output and f"{tag}@example.com" in shown.output
    assert "Merges" in shown.output and "support" in shown.output

    taken = cli.invoke(app, ["customers", "identify", f"other-{tag}", "-a", visitor])
    assert taken.exit_code != 0
    assert f"already belongs to customer '{customer}'" in taken.output
