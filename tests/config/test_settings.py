"""Production refuses the public development secrets; docker-compose has no default secrets."""

from __future__ import annotations

from pathlib import Path

import yaml

from config.settings import DEV_LINK_SECRET, Settings, unsafe_settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_dev_defaults_are_unsafe_one_line_per_setting() -> None:
    problems = unsafe_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    assert len(problems) == 3
    assert [p.split(" ", 1)[0] for p in problems] == [
        "PARCOURS_API_KEYS",
        "PARCOURS_LINK_SECRET",
        "PARCOURS_WEBHOOK_SECRET",
    ]
    assert all("\n" not in p for p in problems)


def test_own_secrets_are_safe_and_a_leftover_change_me_is_not() -> None:
    own = dict(
        api_keys=[{"key": "k-9f2c61d0c0a54b8e", "role": "read"}, "k-admin-77a1"],
        link_secret="a-long-random-link-secret-3f9a",
        webhook_secret="whsec_b3duLXNlY3JldC1mb3ItdGVzdHM=",
    )
    assert unsafe_settings(Settings(_env_file=None, **own)) == []  # type: ignore[call-arg]
    leftover = Settings(_env_file=None, **{**own, "link_secret": "change-me"})  # type: ignore[call-arg]
    assert [p.split(" ", 1)[0] for p in unsafe_settings(leftover)] == ["PARCOURS_LINK_SECRET"]
    with_dev_key = Settings(_env_file=None, **{**own, "api_keys": ["dev-key", "k-2"]})  # type: ignore[call-arg]
    assert [p.split(" ", 1)[0] for p in unsafe_settings(with_dev_key)] == ["PARCOURS_API_KEYS"]
    assert DEV_LINK_SECRET not in " ".join(unsafe_settings(leftover))  # the lines never print secrets


def test_old_list_form_is_admin_and_roles_are_read_from_json(monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("PARCOURS_API_KEYS", '["legacy", {"key": "r", "role": "read"}]')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.role_of("legacy") == "admin"
    assert settings.role_of("r") == "read"
    assert settings.role_of("other") is None


def test_compose_requires_secrets_and_publishes_only_the_api() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["x-parcours"]["environment"]
    for name in ("PARCOURS_API_KEYS", "PARCOURS_LINK_SECRET", "PARCOURS_WEBHOOK_SECRET"):
        assert env[name].startswith("${" + name + ":?"), (name, env[name])
    for service, spec in compose["services"].items():
        for port in spec.get("ports", []):
            if service == "api":
                continue
            assert str(port).startswith("${PARCOURS_EXPOSE_HOST:-127.0.0.1}:"), (service, port)
