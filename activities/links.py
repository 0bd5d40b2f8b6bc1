"""Signed links that go into messages (one-click unsubscribe). The API verifies them with the same secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from config.settings import Settings

UNSUBSCRIBE_TTL_SECONDS = 60 * 60 * 24 * 90


class InvalidLink(ValueError):
    pass


def sign(settings: Settings, payload: dict[str, object], ttl_seconds: int) -> str:
    body = dict(payload, exp=int(time.time()) + ttl_seconds)
    raw = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).rstrip(b"=")
    mac = hmac.new(settings.link_secret.get_secret_value().encode(), raw, hashlib.sha256).digest()
    return raw.decode() + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(settings: Settings, token: str) -> dict[str, object]:
    """The payload of a valid, unexpired token; InvalidLink otherwise."""
    try:
        raw, mac = token.split(".", 1)
        expected = hmac.new(settings.link_secret.get_secret_value().encode(), raw.encode(), hashlib.sha256).digest()
        given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
        if not hmac.compare_digest(expected, given):
            raise InvalidLink("the link's signature does not match")
        payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, json.JSONDecodeError) as exc:
        raise InvalidLink(f"malformed link: {exc}") from None
    if not isinstance(payload, dict) or int(payload.get("exp", 0)) < time.time():
        raise InvalidLink("the link has expired")
    return payload


def unsubscribe_url(settings: Settings, customer_id: str, channel: str, topic: str | None) -> str:
    token = sign(settings, {"c": customer_id, "ch": channel, "t": topic}, UNSUBSCRIBE_TTL_SECONDS)
    return f"{settings.public_base_url.rstrip('/')}/v1/unsubscribe/{token}"
