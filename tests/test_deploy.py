"""docker-compose.yml, parsed (no container engine runs here): its invariants hold. Every image is pinned, the
secrets have no defaults, Temporal's schema is set up by its own admin-tools job before the server, Parcours'
migrations run once before the API and the workers, which have health checks, and nothing but the API is
published on all interfaces."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.support.stack import make_settings
from workers.worker import deployment_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SECRETS = ("PARCOURS_API_KEYS", "PARCOURS_LINK_SECRET", "PARCOURS_WEBHOOK_SECRET")


def test_every_image_is_pinned_to_a_version() -> None:
    for name, spec in SERVICES.items():
        image = spec["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag not in ("", "latest"), (name, image)
        assert re.search(r"\d+\.\d+", tag), (name, image)  # a version, not a floating major such as "17"


def test_temporal_runs_on_its_current_images_with_its_schema_set_up_first() -> None:
    images = {name: spec["image"].rpartition(":")[0] for name, spec in SERVICES.items()}
    assert "temporalio/auto-setup" not in images.values()  # deprecated by Temporal
    assert images["temporal"] == "temporalio/server"
    assert images["temporal-schema"] == "temporalio/admin-tools"
    assert "temporal-sql-tool" in " ".join(SERVICES["temporal-schema"]["command"])
    assert SERVICES["temporal"]["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    assert SERVICES["temporal"]["environment"]["DB"] == "postgres12"


def test_parcours_migrates_once_then_serves_with_health_checks() -> None:
    assert SERVICES["migrate"]["command"] == ["migrate"] and SERVICES["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        spec = SERVICES[name]
        assert spec["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert spec["depends_on"]["temporal-setup"]["condition"] == "service_completed_successfully", name
    for name in ("postgresql", "temporal", "api", "worker"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    port = SERVICES["worker"]["environment"]["PARCOURS_METRICS_PORT"]
    assert f":{port}/metrics" in " ".join(SERVICES["worker"]["healthcheck"]["test"])


def test_secrets_are_required_by_every_parcours_service() -> None:
    for name in ("migrate", "api", "worker"):
        env = SERVICES[name]["environment"]
        for secret in SECRETS:
            assert env[secret].startswith("${" + secret + ":?"), (name, secret)


def test_no_admin_port_is_published_on_all_interfaces() -> None:
    for name, spec in SERVICES.items():
        for port in spec.get("ports", []):
            if name == "api":
                continue
            assert str(port).startswith("${PARCOURS_EXPOSE_HOST:-127.0.0.1}:"), (name, port)


def test_the_setup_job_registers_every_search_attribute_parcours_sets() -> None:
    from contracts.search_attributes import ALL

    command = " ".join(SERVICES["temporal-setup"]["command"])
    assert [key.name for key in ALL if f"--name {key.name} " not in command] == []


def test_workers_are_versioned_only_with_a_deployment_name_and_a_build_id() -> None:
    assert deployment_config(make_settings()) is None
    assert deployment_config(make_settings(worker_deployment_name="parcours", worker_build_id="")) is None
    config = deployment_config(make_settings(worker_deployment_name="parcours", worker_build_id="2026.11.30"))
    assert config is not None and config.use_worker_versioning
    assert (config.version.deployment_name, config.version.build_id) == ("parcours", "2026.11.30")
