"""Sampling this process with py-spy (optional: ``pip install py-spy``) and summarising the hotspots.

The worker and the API run in the benchmark's process, so one profile covers both; ``summary`` splits the
samples by where they were taken (Parcours code, Temporal SDK, asyncpg, pydantic, HTTP stack, ...).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parent.parent) + "/"

# A frame's file decides its area; the first match wins.
AREAS = [
    ("parcours: api", ("/api/",)),
    ("parcours: activities", ("/activities/",)),
    ("parcours: workflows", ("/workflows/",)),
    ("parcours: journeys", ("/journeys/",)),
    ("parcours: store", ("/store/",)),
    ("bench driver", ("/bench/", "/devstack/")),
    ("temporalio worker/workflow sandbox", ("temporalio/worker/",)),
    ("temporalio converter/client", ("temporalio/",)),
    ("pydantic", ("pydantic",)),
    ("asyncpg", ("asyncpg",)),
    ("uvicorn/starlette/fastapi", ("uvicorn", "starlette", "fastapi")),
    ("httpx/httpcore (driver)", ("httpx", "httpcore", "h11")),
    ("aiosmtplib/aiosmtpd/email", ("aiosmtp", "/email/")),
    ("liquid", ("liquid",)),
    ("opentelemetry", ("opentelemetry",)),
    ("structlog/logging", ("structlog", "/logging/")),
    ("asyncio", ("/asyncio/",)),
]


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    def __init__(self, out_dir: Path, rate: int = 100) -> None:
        self.out_dir = out_dir
        self.rate = rate
        self.raw = out_dir / "pyspy.collapsed.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seconds = 0.0

    def available(self) -> bool:
        return py_spy() is not None

    def __enter__(self) -> Profiler:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        exe = py_spy()
        assert exe is not None
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "-p",
                str(os.getpid()),
                "-r",
                str(self.rate),
                "-f",
                "raw",
                "-o",
                str(self.raw),
                "--nonblocking",
                "--threads",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.proc is not None
        self.seconds = time.perf_counter() - self._started
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)

    def summary(self, top: int = 20) -> dict[str, Any]:
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        areas: Counter[str] = Counter()
        threads: Counter[str] = Counter()
        total = 0
        for line in self.raw.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "?"
            frames = [f for f in frames if not f.startswith(("thread", "process"))]
            if not frames:
                continue
            total += count
            threads[thread] += count
            own[_short(frames[-1])] += count
            for name in {_short(f) for f in frames}:
                inclusive[name] += count
            areas[_area(frames)] += count
        lines = [f"py-spy: {total} samples over {self.seconds:.0f}s at {self.rate} Hz (all threads)", ""]
        lines.append("by area (innermost recognised frame):")
        lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in areas.most_common()]
        lines.append("")
        lines.append("top self time:")
        lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in own.most_common(top)]
        lines.append("")
        lines.append("top inclusive (Parcours code):")
        ours = [(n, c) for n, c in inclusive.most_common() if _is_ours(n)][:top]
        lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in ours]
        return {
            "samples": total,
            "seconds": self.seconds,
            "areas": {k: v / total for k, v in areas.most_common()},
            "self": [(n, c / total) for n, c in own.most_common(top)],
            "inclusive_parcours": [(n, c / total) for n, c in ours],
            "threads": {k: v / total for k, v in threads.most_common(10)},
            "raw": str(self.raw),
            "text": "\n".join(lines),
        }


def _short(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    for marker in ("site-packages/", ROOT, "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def _is_ours(name: str) -> bool:
    return any(f"({p}" in name for p in ("api/", "activities/", "workflows/", "journeys/", "store/", "workers/"))


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for area, markers in AREAS:
            if any(m in frame for m in markers):
                return area
    return "other (idle/native)"
