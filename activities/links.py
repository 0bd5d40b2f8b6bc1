"""Links that go into messages (one-click unsubscribe, the preference page, click and open tracking). The API
opens them with the same secret.

A link token is sealed, not just signed: its payload (purpose, customer, channel, topic, expiry) is encrypted
and authenticated, so the URL carries no customer id anyone could read, guess or change.

Version 2 (what ``seal`` makes): AES-256-GCM (``cryptography``) with a key derived from ``link_secret`` by
HMAC-SHA256, a random 96-bit nonce, and the version byte as associated data: ``v || nonce || ciphertext+tag``.

Version 1 (made before; still opened, so links already in mailboxes keep working until they expire): the
standard-library construction, an HMAC-SHA256 keystream in counter mode, encrypt-then-MAC with HMAC-SHA256
truncated to 128 bits. Nothing makes version 1 tokens any more; drop ``_open_v1`` once
``unsubscribe_link_ttl_days`` have passed since every worker made version 2.

    url = unsubscribe_url(settings, "ada", "email", "promotions")
    payload = open_token(settings, token, purpose=UNSUBSCRIBE)   # InvalidLink / ExpiredLink
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from config.settings import Settings

VERSION = b"\x02"
VERSION_1 = b"\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
UNSUBSCRIBE = "u"
PREFERENCES = "p"
CLICK = "c"
OPEN = "o"
_PURPOSES = {UNSUBSCRIBE: "unsubscribe", PREFERENCES: "preferences", CLICK: "tracked", OPEN: "open tracking"}


class InvalidLink(ValueError):
    """The token was altered, is malformed, or was made for another purpose (the API answers 400)."""


class ExpiredLink(InvalidLink):
    """The token is authentic but past its expiry (the API answers 410)."""


def _aead(settings: Settings) -> AESGCM:
    return _aead_for(settings.link_secret.get_secret_value())


@lru_cache(maxsize=8)
def _aead_for(secret: str) -> AESGCM:
    """The cipher for ``secret``: derived and set up once per secret, not for every link (a broadcast seals one or
    two per message). An ``AESGCM`` keeps no state between calls: each seal brings its own nonce."""
    return AESGCM(hmac.new(secret.encode(), b"parcours-links/v2/aes-256-gcm", hashlib.sha256).digest())


def _keys(settings: Settings) -> tuple[bytes, bytes]:
    secret = settings.link_secret.get_secret_value().encode()
    enc = hmac.new(secret, b"parcours-links/v1/encrypt", hashlib.sha256).digest()
    mac = hmac.new(secret, b"parcours-links/v1/authenticate", hashlib.sha256).digest()
    return enc, mac


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    blocks = (hmac.new(key, nonce + i.to_bytes(4, "big"), hashlib.sha256).digest() for i in range(length // 32 + 1))
    return b"".join(blocks)[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))


def seal(settings: Settings, purpose: str, payload: dict[str, Any], ttl_seconds: int) -> str:
    """An opaque, URL-safe token holding ``payload`` for ``purpose`` until ``ttl_seconds`` from now."""
    body = json.dumps(dict(payload, p=purpose, exp=int(time.time()) + ttl_seconds), separators=(",", ":")).encode()
    nonce = os.urandom(NONCE_BYTES)
    sealed = _aead(settings).encrypt(nonce, body, VERSION)
    return base64.urlsafe_b64encode(VERSION + nonce + sealed).rstrip(b"=").decode()


def open_token(settings: Settings, token: str, *, purpose: str) -> dict[str, Any]:
    """The payload of an authentic, unexpired token made for ``purpose``.

    Raises:
        InvalidLink: altered, malformed, or made for another purpose.
        ExpiredLink: authentic but expired.
    """
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
    except (ValueError, UnicodeEncodeError):
        raise InvalidLink("the link is malformed") from None
    if len(raw) < 1 + NONCE_BYTES + TAG_BYTES + 2 or raw[:1] not in (VERSION, VERSION_1):
        raise InvalidLink("the link is malformed")
    if raw[:1] == VERSION:
        try:
            body = _aead(settings).decrypt(raw[1 : 1 + NONCE_BYTES], raw[1 + NONCE_BYTES :], VERSION)
        except InvalidTag:
            raise InvalidLink("the link's signature does not match") from None
    else:
        body = _open_v1(settings, raw)
    try:
        payload = json.loads(body)
    except ValueError:
        raise InvalidLink("the link is malformed") from None
    if not isinstance(payload, dict) or payload.get("p") != purpose:
        raise InvalidLink(f"this is not a {_PURPOSES.get(purpose, purpose)} link")
    if not isinstance(payload.get("exp"), int) or payload["exp"] < time.time():
        raise ExpiredLink("the link has expired")
    return payload


def _open_v1(settings: Settings, raw: bytes) -> bytes:
    """The plaintext of an authentic version 1 token."""
    enc_key, mac_key = _keys(settings)
    nonce, ciphertext, tag = raw[1 : 1 + NONCE_BYTES], raw[1 + NONCE_BYTES : -TAG_BYTES], raw[-TAG_BYTES:]
    expected = hmac.new(mac_key, VERSION_1 + nonce + ciphertext, hashlib.sha256).digest()[:TAG_BYTES]
    if not hmac.compare_digest(expected, tag):
        raise InvalidLink("the link's signature does not match")
    return _xor(ciphertext, _keystream(enc_key, nonce, len(ciphertext)))


def unsubscribe_url(
    settings: Settings, customer_id: str, channel: str, topic: str | None, message_key: str | None = None
) -> str:
    """The one-click unsubscribe URL for a message (RFC 8058); the send activity puts it in List-Unsubscribe.

    ``message_key``: the message's idempotency key, so the unsubscribe is counted against that message.
    """
    payload: dict[str, Any] = {"c": customer_id, "ch": channel, "t": topic}
    if message_key is not None:
        payload["k"] = message_key
    token = seal(settings, UNSUBSCRIBE, payload, _days(settings.unsubscribe_link_ttl_days))
    return f"{settings.public_base_url.rstrip('/')}/v1/unsubscribe/{token}"


def preferences_url(settings: Settings, customer_id: str) -> str:
    """The customer's hosted preference page."""
    token = seal(settings, PREFERENCES, {"c": customer_id}, _days(settings.preference_link_ttl_days))
    return f"{settings.public_base_url.rstrip('/')}/preferences/{token}"


def template_links(settings: Settings, customer_id: str, unsubscribe: str | None) -> dict[str, str]:
    """What Liquid templates see: ``preferences_url`` and ``unsubscribe_url`` ("" when the message has none)."""
    return {"preferences_url": preferences_url(settings, customer_id), "unsubscribe_url": unsubscribe or ""}


def click_url(settings: Settings, message: dict[str, Any], link: str) -> str:
    """A redirect link to ``link`` that records a click on the message (``message``: the ``tracking_payload``)."""
    token = seal(settings, CLICK, dict(message, l=link), _days(settings.tracking_link_ttl_days))
    return f"{settings.public_base_url.rstrip('/')}/c/{token}"


def open_url(settings: Settings, message: dict[str, Any], sent_at: float) -> str:
    """The tracking pixel's URL for an email; ``sent_at`` (epoch seconds) tells a prefetch from a human open."""
    token = seal(settings, OPEN, dict(message, t=int(sent_at)), _days(settings.tracking_link_ttl_days))
    return f"{settings.public_base_url.rstrip('/')}/o/{token}"


def tracking_payload(customer_id: str, message_key: str, journey_id: str, step_id: str, channel: str) -> dict[str, str]:
    """What every click and open token of one message carries (sealed: nothing of it is readable in the URL)."""
    return {"c": customer_id, "k": message_key, "j": journey_id, "s": step_id, "ch": channel}


def is_own_link(settings: Settings, url: str) -> bool:
    """True for unsubscribe and preference-page links (never tracked: they must work whatever happens) and for
    tracking links themselves (never wrapped twice)."""
    base = settings.public_base_url.rstrip("/")
    return url.startswith((f"{base}/v1/unsubscribe/", f"{base}/preferences/", f"{base}/c/", f"{base}/o/"))


def _days(days: float) -> int:
    return int(days * 86400)
