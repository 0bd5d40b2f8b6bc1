"""All Parcours settings in one place.

Every field is read from a ``PARCOURS_<FIELD>`` environment variable (or a ``.env`` file). The Temporal
connection also honours Temporal's own ``TEMPORAL_ADDRESS`` and ``TEMPORAL_NAMESPACE`` when the Parcours
variables are not set.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ChannelBackend = Literal["console", "smtp", "webhook", "inbox"]


class FrequencyCap(BaseModel):
    """At most ``limit`` marketing messages per ``per`` (e.g. ``7d``), over all channels or one ``channel``."""

    limit: int = Field(ge=0)
    per: str = Field(pattern=r"^\s*(\d+\s*[wdhms]\s*)+$")
    channel: str | None = None


class Topic(BaseModel):
    """A subscription topic. ``opt_in``: not subscribed until the customer says yes; ``opt_out``: subscribed unless
    they withdrew."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    label: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=2000)
    default: Literal["opt_in", "opt_out"] = "opt_out"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARCOURS_", env_file=".env", extra="ignore")

    # Where the local stack keeps its files (embedded PostgreSQL, Temporal's SQLite file, logs).
    data_dir: Path = Path(".parcours")

    # PostgreSQL. Empty: the embedded server under data_dir is used.
    database_url: str | None = None
    database_pool_min: int = 1
    database_pool_max: int = 10

    # Temporal.
    temporal_address: str | None = Field(
        default=None, validation_alias=AliasChoices("PARCOURS_TEMPORAL_ADDRESS", "TEMPORAL_ADDRESS")
    )
    temporal_namespace: str = Field(
        default="default", validation_alias=AliasChoices("PARCOURS_TEMPORAL_NAMESPACE", "TEMPORAL_NAMESPACE")
    )
    task_queue: str = "parcours"
    temporal_ui_port: int = 8233
    temporal_port: int = 7233

    # Email over SMTP.
    smtp_host: str = "localhost"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_use_tls: bool = False
    smtp_timeout_seconds: float = 10.0
    smtp_pool_size: int = Field(
        default=10,
        ge=0,
        description="Idle SMTP sessions kept open per channel for reuse; 0: one connection per delivery.",
    )
    smtp_idle_seconds: float = Field(
        default=30.0,
        gt=0,
        description="An idle SMTP session unused for this long is closed instead of reused (servers drop idle "
        "sessions, Postfix after 300 s).",
    )
    email_from: str = "Parcours <journeys@parcours.localhost>"
    email_message_id_domain: str = "parcours.localhost"
    # Base URL the List-Unsubscribe header and the preference links point at.
    public_base_url: str = "http://localhost:8000"

    # Webhook channel: default endpoint (a step may name its own) and the Standard Webhooks secret
    # ("whsec_" followed by base64).
    webhook_url: str | None = None
    webhook_secret: SecretStr = SecretStr("whsec_cGFyY291cnMtbG9jYWwtZGV2ZWxvcG1lbnQtc2VjcmV0")
    webhook_timeout_seconds: float = 10.0

    # Which adapter delivers each channel. SMS and push log to the console until real adapters exist.
    channel_email: ChannelBackend = "smtp"
    channel_sms: ChannelBackend = "console"
    channel_push: ChannelBackend = "console"
    channel_in_app: ChannelBackend = "inbox"
    channel_webhook: ChannelBackend = "webhook"

    # Marketing over email, SMS and push: "opt_in" needs the customer's explicit grant for the channel;
    # "opt_out" sends unless they withdrew it. Transactional messages need no marketing consent.
    consent_default: Literal["opt_in", "opt_out"] = "opt_in"
    # Signs unsubscribe and preference links. Set your own in production.
    link_secret: SecretStr = SecretStr("parcours-dev-link-secret-change-me")
    # How long unsubscribe links and preference-page links stay valid.
    unsubscribe_link_ttl_days: float = Field(default=90, gt=0)
    preference_link_ttl_days: float = Field(default=30, gt=0)
    # Click and open tracking (activities.tracking): how long tracked links and pixels work, and how soon after
    # delivery an open counts as a machine's (a mailbox provider fetching images on arrival), not the customer's.
    tracking_link_ttl_days: float = Field(default=180, gt=0)
    tracking_machine_open_seconds: float = Field(default=5, ge=0)
    # Subscription topics, e.g. [{"name": "product_news", "label": "Product news", "default": "opt_in"}]. Topics
    # defined through the API (PUT /v1/topics/{name}) win over these; an unknown topic behaves as opt_out.
    topics: list[Topic] = Field(default_factory=list)
    # Interests the preference page offers as checkboxes (zero-party data, saved as the ``interests`` attribute).
    interests: list[str] = Field(default_factory=list)

    # Marketing is not sent inside quiet hours (customer's local time, HH:MM-HH:MM; a customer's own
    # ``quiet_hours`` attribute wins). Empty: none, unless the customer set their own.
    quiet_hours: str | None = None
    # Marketing frequency caps across all journeys, e.g. [{"limit": 3, "per": "7d"}, {"limit": 1, "per": "1d",
    # "channel": "sms"}]. A customer's own ``frequency_cap`` attribute (daily, weekly, monthly) adds to these.
    frequency_caps: list[FrequencyCap] = Field(default_factory=list)
    # Cost of one message per channel, for sends that pick the cheapest channel.
    channel_costs: dict[str, float] = Field(
        default_factory=lambda: {"in_app": 0.0, "webhook": 0.0, "push": 0.0001, "email": 0.0005, "sms": 0.04}
    )

    # Default time zone for customers without one.
    default_timezone: str = "UTC"

    # Observability.
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    otel_exporter: Literal["console", "otlp", "none"] = "console"

    # HTTP API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_keys: list[str] = Field(default_factory=lambda: ["dev-key"])
    max_batch_events: int = 500
    max_body_bytes: int = 1_048_576

    # Limits on every value from outside (API bodies, journeys in YAML or JSON, event properties, the CLI): a value
    # past one is refused with a 4xx naming its field (journeys.values.InputLimits).
    max_json_depth: int = Field(default=32, ge=4, le=200)
    max_string_length: int = Field(default=100_000, ge=1_000)
    max_integer: int = Field(default=2**63 - 1, ge=2**31 - 1, le=2**63 - 1)
    max_properties_bytes: int = Field(default=65_536, ge=1_024)
    max_journey_bytes: int = Field(default=262_144, ge=4_096)
    max_journey_steps: int = Field(default=200, ge=1, le=10_000)
    # CPU-heavy validation (journeys, large bodies) runs in worker threads, this many at once per process; more
    # requests wait their turn without holding the event loop.
    validation_threads: int = Field(default=2, ge=1, le=64)

    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir.is_absolute() else Path(os.getcwd()) / self.data_dir


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
