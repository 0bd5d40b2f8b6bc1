"""A worker's /metrics (config.metrics.serve_metrics): served over HTTP, and a taken port named in the error."""

from __future__ import annotations

import socket
import urllib.request
import uuid

import pytest

from config import metrics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_worker_serves_its_metrics_over_http() -> None:
    port = free_port()
    metrics.serve_metrics("127.0.0.1", port)
    journey = f"j-{uuid.uuid4().hex[:8]}"
    metrics.FAILED_STEPS.labels(journey=journey, step_type="webhook").inc()
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f'parcours_failed_steps_total{{journey="{journey}",step_type="webhook"}} 1.0' in text


def test_a_taken_port_says_which_setting_moves_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="PARCOURS_METRICS_PORT"):
            metrics.serve_metrics("127.0.0.1", taken.getsockname()[1])


def test_reason_codes_keep_labels_bounded() -> None:
    assert metrics.reason_code("provider_rejected: 550 mailbox unavailable for ada@example.com") == "provider_rejected"
    assert metrics.reason_code(None) == ""
