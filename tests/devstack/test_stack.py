"""The local stack's settings (devstack.stack.local_settings): links follow the API's port unless set."""

from __future__ import annotations

from config.settings import Settings
from devstack.stack import local_settings


def test_links_point_at_the_port_the_api_really_listens_on() -> None:
    settings = local_settings(Settings(_env_file=None, api_port=8123))  # type: ignore[call-arg]
    assert settings.public_base_url == "http://localhost:8123"


def test_a_public_base_url_the_operator_set_is_kept() -> None:
    chosen = Settings(_env_file=None, api_port=8123, public_base_url="https://links.example")  # type: ignore[call-arg]
    assert local_settings(chosen).public_base_url == "https://links.example"


def test_an_ipv6_api_address_is_bracketed() -> None:
    assert local_settings(Settings(_env_file=None, api_host="::1", api_port=9000)).public_base_url == (  # type: ignore[call-arg]
        "http://[::1]:9000"
    )
