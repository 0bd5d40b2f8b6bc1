"""All Parcours settings in one place.

Every field is read from a ``PARCOURS_<FIELD>`` environment variable (or a ``.env`` file). The Temporal
connection also honours Temporal's own ``TEMPORAL_ADDRESS`` and ``TEMPORAL_NAMESPACE`` when the Parcours
variables are not set.
"""

from __future__ import annotations

import hmac
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ChannelBackend = Literal["console", "smtp", "webhook", "inbox", "twilio", "http", "devices"]
Role = Literal["read", "write", "admin"]
"""What an API key may do: ``read`` (reports, profiles, lists), ``write`` (also events, profiles, consent, journeys),
``admin`` (also erasure, exports, lifting suppressions, topics, archiving)."""
ROLE_RANK: dict[str, int] = {"read": 0, "write": 1, "admin": 2}

# The values the local stack and the tests run with. They are public (they are in this file), so a production
# process (``parcours api``, ``parcours worker``) refuses to start with any of them: see ``unsafe_settings``.
DEV_API_KEY = "dev-key"
DEV_WEBHOOK_SECRET = "whsec_cGFyY291cnMtbG9jYWwtZGV2ZWxvcG1lbnQtc2VjcmV0"
DEV_LINK_SECRET = "parcours-dev-link-secret-change-me"
# Other values known to be public (examples and former docker-compose defaults).
PUBLIC_SECRETS = frozenset({DEV_API_KEY, DEV_WEBHOOK_SECRET, DEV_LINK_SECRET, "change-me", "changeme", ""})


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


class ApiKey(BaseModel):
    """One accepted API key and its role. A bare string (the former list form) is an ``admin`` key."""

    key: SecretStr
    role: Role = "admin"


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
    # Worker Versioning (deploy/README.md): a worker that declares both polls as this version of the deployment;
    # runs move to a new version once it is made current (`temporal worker deployment set-current-version`).
    worker_deployment_name: str | None = None
    worker_build_id: str | None = None
    temporal_ui_port: int = 8233
    temporal_port: int = 7233
    temporal_ui_url: str | None = None
    """The Temporal UI that operators open (links in ``parcours ops``); None: the local UI on ``temporal_ui_port``."""
    console_page_size: int = Field(default=100, ge=1, le=1000)
    """How many rows a console list shows per page (customers waiting at a step, a customer's timeline)."""
    segment_count_max_age_seconds: float = Field(default=300, ge=0, le=31_536_000)
    """How old a segment's stored exact count the console shows without counting again in the background."""
    segment_recounts: int = Field(default=2, ge=1, le=32)
    test_sends_per_hour: int = Field(default=30, ge=1, le=10_000)
    """How many background segment recounts one API process runs at once (one per segment at most)."""

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
    smtp_connections: int = Field(
        default=4,
        ge=1,
        le=100,
        description="SMTP sessions one broadcast batch delivers over at once (its chunks share them); sessions are "
        "reused across chunks when smtp_pool_size is at least this.",
    )
    smtp_session_max_messages: int = Field(
        default=100,
        ge=1,
        description="Messages sent over one SMTP session before it is closed and a new one opened (servers limit "
        "messages per connection).",
    )
    smtp_session_max_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Age after which an SMTP session is closed instead of reused, however busy.",
    )
    email_from: str = "Parcours <journeys@parcours.localhost>"
    email_message_id_domain: str = "parcours.localhost"
    # Base URL the List-Unsubscribe header and the preference links point at.
    public_base_url: str = "http://localhost:8000"

    # Webhook channel: default endpoint (a step may name its own) and the Standard Webhooks secret
    # ("whsec_" followed by base64).
    webhook_url: str | None = None
    webhook_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)
    webhook_timeout_seconds: float = 10.0
    # Webhook steps and the webhook channel never connect to loopback, private, link-local, multicast or reserved
    # addresses (checked on the resolved address) except these host names or CIDR networks, e.g.
    # ["localhost", "10.20.0.0/16"]. ``parcours dev`` allows loopback.
    webhook_allow_hosts: list[str] = Field(default_factory=list)

    # SMS (activities/channels/sms.py). Texts over sms_max_segments segments are refused: at publish when the text
    # is static, else when it is sent. HELP texted to our number is answered with sms_help_text.
    sms_max_segments: int = Field(default=6, ge=1, le=10)
    sms_help_text: str = "Parcours: reply STOP to stop receiving messages, START to receive them again."
    # Twilio's Messages API: the account, a sender (From number or Messaging Service) and the base URL.
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str = "https://api.twilio.com"
    # Where Twilio sends status callbacks; none: {public_base_url}/v1/providers/twilio/status.
    twilio_status_callback_url: str | None = None
    # A generic HTTP SMS provider: POST sms_http_body (a JSON object whose strings are Liquid templates seeing
    # to, from, text, idempotency_key) to sms_http_url with sms_http_headers.
    sms_http_url: str | None = None
    sms_http_headers: dict[str, str] = Field(default_factory=dict)
    sms_http_body: dict[str, Any] = Field(
        default_factory=lambda: {"to": "{{ to }}", "from": "{{ from }}", "text": "{{ text }}"}
    )
    sms_http_from: str | None = None
    # The generic provider's inbound SMS (POST /v1/providers/sms/inbound): the key of its HMAC-SHA256 signature.
    # None: the route answers 404.
    sms_http_inbound_secret: SecretStr | None = None
    sms_timeout_seconds: float = Field(default=10.0, gt=0)

    # Push to registered devices (activities/channels/push.py): FCM HTTP v1, Web Push, APNs.
    fcm_project_id: str | None = None
    # A Google service account key (JSON file) allowed to send with FCM; its token_uri is where tokens come from.
    fcm_service_account_file: Path | None = None
    fcm_base_url: str = "https://fcm.googleapis.com"
    # Web Push VAPID key: the private key, PEM or raw base64url (as `vapid --gen` writes); and the contact.
    vapid_private_key: SecretStr | None = None
    vapid_subject: str = "mailto:push@parcours.localhost"
    webpush_ttl_seconds: int = Field(default=86_400, ge=0)
    # APNs token authentication: the .p8 signing key, its key id, the team id, the app's bundle id.
    apns_key_file: Path | None = None
    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_topic: str | None = None
    apns_base_url: str = "https://api.push.apple.com"
    # CA certificates (PEM) to trust for APNs instead of the default bundle (a private CA, a test server).
    apns_ca_file: Path | None = None
    push_timeout_seconds: float = Field(default=10.0, gt=0)
    # How many times a push is tried to one device that fails transiently (one per attempt of the send) before that
    # device is given up; below the send's 12 Temporal attempts, so a push another device took is recorded as sent.
    push_device_attempts: int = Field(default=5, ge=1, le=10)

    # Which adapter delivers each channel: email smtp|webhook|console; sms twilio|http|webhook|console;
    # push devices|webhook|console. SMS and push log to the console unless configured.
    channel_email: ChannelBackend = "smtp"
    channel_sms: ChannelBackend = "console"
    channel_push: ChannelBackend = "console"
    channel_in_app: ChannelBackend = "inbox"
    channel_webhook: ChannelBackend = "webhook"

    # Marketing over email, SMS and push: "opt_in" needs the customer's explicit grant for the channel;
    # "opt_out" sends unless they withdrew it. Transactional messages need no marketing consent.
    consent_default: Literal["opt_in", "opt_out"] = "opt_in"
    # Signs unsubscribe and preference links. Set your own in production.
    link_secret: SecretStr = SecretStr(DEV_LINK_SECRET)
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

    # Customer value (store/customer_values.py, workflows/customer_values.py): which event is an order and which of
    # its properties its value (dotted for a nested one), the horizon the lifetime value is predicted over, how many
    # repeat customers the BG/NBD model needs before it is used (else the historical-rate fallback), and how often
    # the values are refreshed on a Temporal Schedule (a duration such as 1d or 12h; "off": never on a schedule).
    order_event: str = Field(default="order_placed", min_length=1)
    order_value_property: str = Field(default="total", min_length=1)
    clv_horizon_days: float = Field(default=365, gt=0)
    clv_min_repeat_customers: int = Field(default=50, ge=1)
    customer_values_every: str = Field(default="1d", pattern=r"^\s*(off|(\d+\s*[wdhms]\s*)+)\s*$")

    # Default time zone for customers without one.
    default_timezone: str = "UTC"

    # Observability.
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    # Spans: "otlp" to an OpenTelemetry collector (OTEL_EXPORTER_OTLP_ENDPOINT), "console" to debug, "none".
    otel_exporter: Literal["console", "otlp", "none"] = "none"
    # Mask recipients, addresses, message content and link tokens in every log line (config.logging.redact).
    log_redact: bool = True
    # Prometheus (config/metrics.py). The API serves GET /metrics on its own port, to a key with the read role
    # (``Authorization: Bearer``) unless metrics_public. A worker serves its metrics on metrics_host:metrics_port,
    # and the Temporal SDK's own on metrics_host:temporal_metrics_port (0: not served).
    metrics_public: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    temporal_metrics_port: int = Field(default=0, ge=0, le=65535)

    # HTTP API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Accepted API keys with their roles: [{"key": "...", "role": "read" | "write" | "admin"}]; a bare string in
    # the list (["key"], the former form) is an admin key.
    api_keys: list[ApiKey] = Field(default_factory=lambda: [ApiKey(key=SecretStr(DEV_API_KEY))])
    max_batch_events: int = 500
    max_body_bytes: int = 1_048_576

    @field_validator("api_keys", mode="before")
    @classmethod
    def _bare_keys_are_admin(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"key": item, "role": "admin"} if isinstance(item, str) else item for item in value]
        return value

    def role_of(self, key: str) -> Role | None:
        """The role of ``key`` (compared in constant time against every configured key); None if unknown."""
        found: Role | None = None
        for candidate in self.api_keys:
            if hmac.compare_digest(key.encode(), candidate.key.get_secret_value().encode()):
                found = candidate.role
        return found

    # Limits on every value from outside (API bodies, journeys in YAML or JSON, event properties, the CLI): a value
    # past one is refused with a 4xx naming its field (journeys.values.InputLimits).
    max_json_depth: int = Field(default=32, ge=4, le=200)
    max_string_length: int = Field(default=100_000, ge=1_000)
    max_integer: int = Field(default=2**63 - 1, ge=2**31 - 1, le=2**63 - 1)
    max_properties_bytes: int = Field(default=65_536, ge=1_024)
    max_journey_bytes: int = Field(default=262_144, ge=4_096)
    max_journey_steps: int = Field(default=200, ge=1, le=10_000)
    # CPU-heavy validation (journeys, large bodies) runs in this many processes per API process (api.validation),
    # each check for at most validation_timeout_seconds; validation_queue more wait, beyond that 429. 0 processes:
    # validation_threads threads instead (no time limit; they compete with the API for the interpreter lock).
    validation_processes: int = Field(default=2, ge=0, le=64)
    validation_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    validation_queue: int = Field(default=16, ge=0, le=10_000)
    validation_threads: int = Field(default=2, ge=1, le=64)

    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir.is_absolute() else Path(os.getcwd()) / self.data_dir


def unsafe_settings(settings: Settings) -> list[str]:
    """Why ``settings`` must not serve production: one line per setting that is unset or holds a public value.

    ``parcours api`` and ``parcours worker`` refuse to start when this is not empty; ``parcours dev`` and the
    tests run with the dev values on purpose.
    """
    problems = []
    keys = [k.key.get_secret_value() for k in settings.api_keys]
    if not keys:
        problems.append('PARCOURS_API_KEYS is empty: set at least one key, e.g. [{"key": "...", "role": "admin"}]')
    elif any(k in PUBLIC_SECRETS for k in keys):
        problems.append(
            "PARCOURS_API_KEYS holds a public development key (dev-key, change-me or empty): set your own keys"
        )
    if settings.link_secret.get_secret_value() in PUBLIC_SECRETS:
        problems.append(
            "PARCOURS_LINK_SECRET is not set (or is a public value): set a long random secret; it seals unsubscribe "
            "and preference links and keys erased customers' pseudonyms"
        )
    if settings.webhook_secret.get_secret_value() in PUBLIC_SECRETS:
        problems.append(
            "PARCOURS_WEBHOOK_SECRET is not set (or is a public value): set your own whsec_... secret; it signs "
            "webhooks"
        )
    return problems


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
