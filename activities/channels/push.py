"""Push to the customer's registered devices (``store.devices``): FCM HTTP v1, Web Push and APNs.

A push goes to every active device of the customer, each over its platform's provider:

- **FCM HTTP v1**: ``POST {fcm_base_url}/v1/projects/{project}/messages:send`` with a Bearer token. The token is
  an OAuth2 access token obtained from the service account's ``token_uri`` with a JWT (RS256, signed by the
  service account's key) under the ``urn:ietf:params:oauth:grant-type:jwt-bearer`` grant, cached until a minute
  before it expires.
- **Web Push**: RFC 8030 delivery to the subscription's endpoint, the payload encrypted per RFC 8291
  (``aes128gcm``, ``http_ece``) and the request authenticated per RFC 8292 (VAPID, ``py_vapid``).
- **APNs**: HTTP/2 over TLS (httpx with ``h2``, ALPN ``h2``; the certificate checked against the default bundle
  or ``apns_ca_file``) to ``{apns_base_url}/3/device/{token}`` with token authentication: an ES256 provider JWT
  (``kid`` the key id, ``iss`` the team id, ``iat``) kept for 50 minutes (Apple refuses one older than an hour,
  ``ExpiredProviderToken``, and one renewed more often than every 20 minutes, ``TooManyProviderTokenUpdates``).
  Only ``ExpiredProviderToken`` makes a new one; ``InvalidProviderToken`` (wrong key, key id or team) is retried
  with the same token until the configuration is fixed.

A provider saying the token can never take a push (FCM ``UNREGISTERED`` or ``SENDER_ID_MISMATCH``, Web Push
``404``/``410``, APNs ``410``, ``BadDeviceToken`` or ``DeviceTokenNotForTopic``) deactivates that device at once, in
its own statement, whatever becomes of the send. ``SENDER_ID_MISMATCH`` and ``DeviceTokenNotForTopic`` say the token
belongs to another Firebase project or another app: it cannot succeed for ours, ever. (A wrong
``PARCOURS_FCM_PROJECT_ID`` is refused by FCM with ``PERMISSION_DENIED`` before any token is looked at; a wrong
``PARCOURS_APNS_TOPIC`` would make APNs answer ``DeviceTokenNotForTopic`` for every device, and deactivate them until
their apps register again: the README says so.)

Each device's answer is recorded at once in ``message_deliveries`` (``store.deliveries``), so a retry of the send
(Temporal's, after a transient failure) delivers only to the devices that do not have the push yet. The rule, over
all of the push's deliveries so far:

- a device that failed transiently (5xx, 408/425/429, a network error, our provider token refused) is ``pending``
  and tried again on the next attempt of the send, up to ``push_device_attempts`` deliveries in all; then it is
  given up (``gave_up``). A pending device that is no longer active (deleted, deactivated) is not waited for;
- while some active device is pending, the send fails transiently (``TransientDeliveryError``), even if another
  device has the push already: Temporal retries it and only the pending devices are tried;
- otherwise the push is **sent** when at least one device has it (now or on an earlier attempt), and **failed
  permanently** when none has (the journey falls back to its next channel).

Once one device has the push, the send activity keeps to push: a retry never falls back to another channel, and a
retry the send policy would now refuse (consent withdrawn meanwhile) is recorded as sent, with the devices that had
it, without delivering to the others (``activities.journey``).

Idempotency: none of these providers takes an idempotency key. What they offer instead is a collapse key, which
replaces a notification still waiting at the provider by a newer one with the same key: FCM ``collapse_key`` and
``apns-collapse-id``, Web Push ``Topic``, APNs ``apns-collapse-id``; each carries a digest of the message's
idempotency key, so a retried delivery replaces rather than doubles an undelivered one. APNs also gets
``apns-id``, a UUID derived from the key and the device.

``DevicesPushChannel.send_to_device`` is a test send's path: one message to one device the caller gives, over the
same sender, its answer returned as is; no stored device is read, no delivery recorded, no device deactivated.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import http_ece
import httpx
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from activities.channels.base import (
    DeliveryResult,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from activities.channels.egress import EgressRefusedError, guarded_client
from config.settings import Settings
from store import deliveries as delivery_store
from store import devices as device_store
from store.db import Pool
from store.deliveries import Delivery
from store.devices import Device

log = structlog.get_logger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
APNS_TOKEN_SECONDS = 50 * 60
RETRYABLE_STATUSES = frozenset({408, 425, 429})
# Answers that say this token can never take a push from us: the device is deactivated.
DEAD_FCM_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
DEAD_APNS_REASONS = frozenset({"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"})

Verdict = Literal["sent", "dead", "failed", "retry"]


@dataclass(frozen=True)
class DeviceOutcome:
    verdict: Verdict
    detail: dict[str, Any]
    provider_id: str | None = None


def collapse_key(idempotency_key: str) -> str:
    """A short digest of the key: 32 URL-safe characters (Web Push ``Topic`` allows at most 32)."""
    digest = hashlib.sha256(idempotency_key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:32]


def _by_status(status: int) -> Verdict:
    return "retry" if status in RETRYABLE_STATUSES or status >= 500 else "failed"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"text": response.text[:500]}
    return body if isinstance(body, dict) else {"body": body}


class FcmSender:
    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        if not settings.fcm_project_id or settings.fcm_service_account_file is None:
            raise ValueError("FCM needs PARCOURS_FCM_PROJECT_ID and PARCOURS_FCM_SERVICE_ACCOUNT_FILE")
        self._settings = settings
        self._client = client
        account = json.loads(Path(settings.fcm_service_account_file).read_text())
        self._email = account["client_email"]
        self._key = account["private_key"]
        self._key_id = account.get("private_key_id")
        self._token_uri = account.get("token_uri") or "https://oauth2.googleapis.com/token"
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    async def access_token(self) -> str:
        """The cached OAuth2 access token, or a new one when it expires within a minute."""
        async with self._lock:
            if self._token is not None and self._token[1] - 60 > time.time():
                return self._token[0]
            now = int(time.time())
            assertion = jwt.encode(
                {"iss": self._email, "scope": FCM_SCOPE, "aud": self._token_uri, "iat": now, "exp": now + 3600},
                self._key,
                algorithm="RS256",
                headers={"kid": self._key_id} if self._key_id else None,
            )
            try:
                response = await self._client.post(
                    self._token_uri, data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
                )
            except httpx.TransportError as exc:
                raise TransientDeliveryError(f"FCM token endpoint unreachable: {exc!r}") from exc
            body = _json(response)
            if response.status_code != 200 or not isinstance(body.get("access_token"), str):
                # Our credentials, not the message: retried until the configuration is fixed.
                raise TransientDeliveryError(f"FCM token endpoint answered {response.status_code}", response=body)
            self._token = (body["access_token"], now + float(body.get("expires_in", 3600)))
            return self._token[0]

    async def send(self, device: Device, message: OutboundMessage) -> DeviceOutcome:
        s = self._settings
        content = message.content
        key = collapse_key(message.idempotency_key)
        payload = {
            "message": {
                "token": device.token,
                "notification": {"title": str(content.get("title") or ""), "body": str(content.get("body") or "")},
                "data": {"idempotency_key": message.idempotency_key, **_data(content)},
                "android": {"collapse_key": key},
                "apns": {"headers": {"apns-collapse-id": key}},
            }
        }
        url = f"{s.fcm_base_url.rstrip('/')}/v1/projects/{s.fcm_project_id}/messages:send"
        token = await self.access_token()
        try:
            response = await self._client.post(url, json=payload, headers={"authorization": f"Bearer {token}"})
        except httpx.TransportError as exc:
            return DeviceOutcome("retry", {"error": repr(exc)})
        body = _json(response)
        if response.status_code == 200:
            return DeviceOutcome("sent", {"status": 200}, provider_id=body.get("name"))
        raw_error = body.get("error")
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        codes = {d.get("errorCode") for d in error.get("details", []) if isinstance(d, dict)}
        detail = {"status": response.status_code, "error": error.get("status"), "codes": sorted(map(str, codes))}
        if codes & DEAD_FCM_CODES:
            return DeviceOutcome("dead", detail)
        if response.status_code == 401:
            self._token = None  # revoked or expired early: fetch a new one on the retry
            return DeviceOutcome("retry", detail)
        return DeviceOutcome(_by_status(response.status_code), detail)


def _data(content: dict[str, Any]) -> dict[str, str]:
    """FCM and APNs data: the push's ``data`` object (FCM wants strings) and its ``url``."""
    raw = content.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    out = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    if content.get("url"):
        out["url"] = str(content["url"])
    return out


def _vapid(private_key: str) -> Vapid02:
    text = private_key.strip()
    if text.startswith("-----BEGIN"):
        return Vapid02.from_pem(text.encode())
    return Vapid02.from_string(text)  # raw (32 bytes) or DER, base64url


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class WebPushSender:
    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        if settings.vapid_private_key is None:
            raise ValueError("Web Push needs PARCOURS_VAPID_PRIVATE_KEY")
        self._settings = settings
        self._client = client
        self._vapid = _vapid(settings.vapid_private_key.get_secret_value())

    def encrypt(self, subscription: dict[str, Any], payload: bytes) -> bytes:
        """RFC 8291: aes128gcm with a fresh ECDH key, the subscription's p256dh key and auth secret."""
        keys = subscription["keys"]
        return bytes(
            http_ece.encrypt(
                payload,
                salt=None,
                private_key=ec.generate_private_key(ec.SECP256R1()),
                dh=_b64decode(keys["p256dh"]),
                auth_secret=_b64decode(keys["auth"]),
                version="aes128gcm",
            )
        )

    async def send(self, device: Device, message: OutboundMessage) -> DeviceOutcome:
        subscription = device.subscription or {}
        endpoint = str(subscription.get("endpoint", ""))
        content = message.content
        payload = json.dumps(
            {
                "title": content.get("title"),
                "body": content.get("body"),
                "data": content.get("data") or {},
                "url": content.get("url"),
                "idempotency_key": message.idempotency_key,
            }
        ).encode()
        try:
            body = self.encrypt(subscription, payload)
        except (KeyError, TypeError, ValueError) as exc:
            return DeviceOutcome("dead", {"error": f"unusable subscription: {exc}"})
        origin = httpx.URL(endpoint)
        claims = {
            "sub": self._settings.vapid_subject,
            "aud": f"{origin.scheme}://{origin.netloc.decode()}",
            "exp": int(time.time()) + 12 * 3600,
        }
        headers = {
            **self._vapid.sign(claims),
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "ttl": str(self._settings.webpush_ttl_seconds),
            "topic": collapse_key(message.idempotency_key),
            "urgency": "normal",
        }
        try:
            response = await self._client.post(endpoint, content=body, headers=headers)
        except httpx.TransportError as exc:
            return DeviceOutcome("retry", {"error": repr(exc)})
        detail = {"status": response.status_code}
        if response.status_code in (200, 201, 202):
            return DeviceOutcome("sent", detail, provider_id=response.headers.get("location"))
        if response.status_code in (404, 410):
            return DeviceOutcome("dead", detail)
        return DeviceOutcome(_by_status(response.status_code), {**detail, "body": response.text[:500]})


class ApnsSender:
    """``tokens``: where the provider token is kept, by key; a store shared by several senders of one process (the
    test sends') makes them sign one token per key, not one each (Apple refuses a new one within 20 minutes)."""

    def __init__(self, settings: Settings, *, tokens: dict[str, tuple[str, float]] | None = None) -> None:
        s = settings
        if s.apns_key_file is None or not s.apns_key_id or not s.apns_team_id or not s.apns_topic:
            raise ValueError(
                "APNs needs PARCOURS_APNS_KEY_FILE, PARCOURS_APNS_KEY_ID, PARCOURS_APNS_TEAM_ID, PARCOURS_APNS_TOPIC"
            )
        self._settings = settings
        self._key = Path(s.apns_key_file).read_text()
        self._tokens: dict[str, tuple[str, float]] = tokens if tokens is not None else {}
        self._token_key = f"{s.apns_team_id}/{s.apns_key_id}/{hashlib.sha256(self._key.encode()).hexdigest()}"
        # APNs speaks HTTP/2 only, over TLS (ALPN "h2"). Certificates are always verified: against the default
        # bundle, or against apns_ca_file when set (a private CA, a test server).
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(s.apns_ca_file)) if s.apns_ca_file is not None else True
        )
        self._client = httpx.AsyncClient(http1=False, http2=True, verify=verify, timeout=s.push_timeout_seconds)

    @property
    def _token(self) -> tuple[str, float] | None:
        """The provider token and when it was signed; None: sign one."""
        return self._tokens.get(self._token_key)

    @_token.setter
    def _token(self, value: tuple[str, float] | None) -> None:
        if value is None:
            self._tokens.pop(self._token_key, None)
        else:
            self._tokens[self._token_key] = value

    def provider_token(self) -> str:
        now = time.time()
        if self._token is None or now - self._token[1] > APNS_TOKEN_SECONDS:
            token = jwt.encode(
                {"iss": self._settings.apns_team_id, "iat": int(now)},
                self._key,
                algorithm="ES256",
                headers={"kid": self._settings.apns_key_id},
            )
            self._token = (token, now)
        return self._token[0]

    async def send(self, device: Device, message: OutboundMessage) -> DeviceOutcome:
        s = self._settings
        content = message.content
        payload = {
            **_data(content),
            "idempotency_key": message.idempotency_key,
            # Last, so no custom key named "aps" can replace Apple's dictionary.
            "aps": {"alert": {"title": str(content.get("title") or ""), "body": str(content.get("body") or "")}},
        }
        headers = {
            "authorization": f"bearer {self.provider_token()}",
            "apns-topic": s.apns_topic or "",
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{message.idempotency_key}/{device.device_id}")),
            "apns-collapse-id": collapse_key(message.idempotency_key),
        }
        url = f"{s.apns_base_url.rstrip('/')}/3/device/{device.token}"
        try:
            response = await self._client.post(url, json=payload, headers=headers)
        except httpx.TransportError as exc:
            return DeviceOutcome("retry", {"error": repr(exc)})
        body = _json(response) if response.content else {}
        detail = {"status": response.status_code, "reason": body.get("reason")}
        if response.status_code == 200:
            return DeviceOutcome("sent", detail, provider_id=response.headers.get("apns-id"))
        if response.status_code == 410 or body.get("reason") in DEAD_APNS_REASONS:
            return DeviceOutcome("dead", detail)
        if body.get("reason") == "ExpiredProviderToken":
            self._token = None  # older than Apple allows (clock skew): sign a new one for the retry
            return DeviceOutcome("retry", detail)
        if body.get("reason") in ("InvalidProviderToken", "TooManyProviderTokenUpdates"):
            # Our key id, team id or key is wrong, or tokens were renewed too often: signing a new token now would
            # not help and would count as one more update. Retried (with the same token) until fixed.
            return DeviceOutcome("retry", detail)
        return DeviceOutcome(_by_status(response.status_code), detail)

    async def close(self) -> None:
        await self._client.aclose()


_STATUS: dict[Verdict, Literal["sent", "pending", "failed", "dead"]] = {
    "sent": "sent",
    "retry": "pending",
    "failed": "failed",
    "dead": "dead",
}


def _report(deliveries: list[Delivery], tried: dict[str, DeviceOutcome]) -> dict[str, dict[str, Any]]:
    """Each device's delivery as the message records it: its status and attempts, and this attempt's answer."""
    report: dict[str, dict[str, Any]] = {}
    for d in deliveries:
        entry: dict[str, Any] = {"platform": d.platform, "delivery": d.status, "attempts": d.attempts}
        outcome = tried.get(d.device_id)
        if outcome is not None:
            entry.update(verdict=outcome.verdict, **outcome.detail)
        elif d.error:
            entry.update(d.error)
        report[d.device_id] = entry
    return report


def delivered(deliveries: list[Delivery], report: dict[str, dict[str, Any]] | None = None) -> DeliveryResult | None:
    """The push as sent, from its deliveries: the provider ids of the devices that have it; None when none has."""
    sent = [d for d in deliveries if d.status == "sent"]
    if not sent:
        return None
    ids = [d.provider_id or d.device_id for d in sent]
    return DeliveryResult(
        provider_message_id=",".join(ids)[:1000],
        response={"devices": report if report is not None else _report(deliveries, {})},
    )


def missing_settings(settings: Settings, platform: str) -> list[str]:
    """The settings ``platform`` (``fcm``, ``apns``, ``web``) still needs before a push can go out over it."""
    s = settings
    needed: dict[str, list[tuple[str, object]]] = {
        "fcm": [
            ("PARCOURS_FCM_PROJECT_ID", s.fcm_project_id),
            ("PARCOURS_FCM_SERVICE_ACCOUNT_FILE", s.fcm_service_account_file),
        ],
        "web": [("PARCOURS_VAPID_PRIVATE_KEY", s.vapid_private_key)],
        "apns": [
            ("PARCOURS_APNS_KEY_FILE", s.apns_key_file),
            ("PARCOURS_APNS_KEY_ID", s.apns_key_id),
            ("PARCOURS_APNS_TEAM_ID", s.apns_team_id),
            ("PARCOURS_APNS_TOPIC", s.apns_topic),
        ],
    }
    return [name for name, value in needed[platform] if not value]


class DevicesPushChannel:
    """Push to every active device of the customer, each over its platform's provider.

    Platforms without configuration are left out at start-up (a device of that platform is recorded as failed,
    ``platform_not_configured``), so a deployment with FCM only still delivers to its FCM devices. ``platforms``
    limits the senders built to those (a test send needs only its device's); ``apns_tokens`` is ``ApnsSender``'s.
    """

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        *,
        name: str = "push",
        platforms: Collection[str] | None = None,
        apns_tokens: dict[str, tuple[str, float]] | None = None,
    ) -> None:
        self.name = name
        self._pool = pool
        self._device_attempts = settings.push_device_attempts
        self._client = httpx.AsyncClient(timeout=settings.push_timeout_seconds)
        self._web_client: httpx.AsyncClient | None = None
        self._senders: dict[str, FcmSender | WebPushSender | ApnsSender] = {}
        wanted = set(platforms) if platforms is not None else {"fcm", "web", "apns"}
        if "fcm" in wanted and settings.fcm_project_id and settings.fcm_service_account_file:
            self._senders["fcm"] = FcmSender(settings, self._client)
        if "web" in wanted and settings.vapid_private_key is not None:
            # A Web Push endpoint is a URL the app registered (so anyone with a write key): every connection to one
            # is checked as a webhook's is (``channels.egress``), so a subscription cannot point Parcours at its own
            # network.
            self._web_client = guarded_client(settings.webhook_allow_hosts, timeout=settings.push_timeout_seconds)
            self._senders["web"] = WebPushSender(settings, self._web_client)
        if "apns" in wanted and settings.apns_key_file is not None:
            self._senders["apns"] = ApnsSender(settings, tokens=apns_tokens)
        if not self._senders:
            raise ValueError(
                "the devices push adapter needs FCM, Web Push (VAPID) or APNs settings; see README, Configuration"
            )

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        """Deliver to every active device that does not have the message yet (``store.deliveries``), record each
        answer at once, then settle the push over all of its deliveries so far (module docstring)."""
        key = message.idempotency_key
        before = {d.device_id: d for d in await delivery_store.deliveries_of(self._pool, key)}
        devices = await device_store.devices_of(self._pool, message.customer_id, active_only=True)
        if not devices and not before:
            raise PermanentDeliveryError("customer has no active push device")
        todo = [d for d in devices if d.device_id not in before or before[d.device_id].status == "pending"]
        outcomes = await asyncio.gather(*(self._send(device, message) for device in todo))
        answers = [
            delivery_store.Answer(
                device_id=d.device_id,
                platform=d.platform,
                status=_STATUS[o.verdict],
                provider_id=o.provider_id,
                error=None if o.verdict == "sent" else o.detail,
            )
            for d, o in zip(todo, outcomes, strict=True)
        ]
        now = await delivery_store.record(
            self._pool, key, message.customer_id, answers, max_attempts=self._device_attempts
        )
        for device, outcome in zip(todo, outcomes, strict=True):
            if outcome.verdict == "dead":
                if await device_store.deactivate(self._pool, device.customer_id, device.device_id, "dead_token"):
                    log.info("push.device_deactivated", customer_id=device.customer_id, device_id=device.device_id)
        deliveries = list({**before, **{d.device_id: d for d in now}}.values())
        report = _report(deliveries, {d.device_id: o for d, o in zip(todo, outcomes, strict=True)})
        active = {d.device_id for d in devices}
        waiting = [d for d in deliveries if d.status == "pending" and d.device_id in active]
        if waiting:
            have = sum(d.status == "sent" for d in deliveries)
            said = f"{have} device(s) took the push" if have else "no device took the push yet"
            raise TransientDeliveryError(f"{said}; {len(waiting)} to try again", response={"devices": report})
        result = delivered(deliveries, report)
        if result is not None:
            return result
        raise PermanentDeliveryError("no device took the push", response={"devices": report})

    async def send_to_device(self, device: Device, message: OutboundMessage) -> DeviceOutcome:
        """Deliver ``message`` to ``device`` alone, over its platform's sender, once: the provider's answer, and
        nothing else. Unlike ``deliver`` it reads no stored device, records no delivery and deactivates nothing,
        whatever the answer (a test send to a device given by hand: ``api.previews``). An endpoint the egress check
        refuses raises ``EgressRefusedError`` (the caller's input names it)."""
        sender = self._senders.get(device.platform)
        if sender is None:
            return DeviceOutcome("failed", {"error": "platform_not_configured"})
        try:
            return await sender.send(device, message)
        except TransientDeliveryError as exc:
            return DeviceOutcome("retry", {"error": str(exc)})

    async def _send(self, device: Device, message: OutboundMessage) -> DeviceOutcome:
        try:
            return await self.send_to_device(device, message)
        except EgressRefusedError as exc:  # it will never be reachable: the device goes, as a dead token's would
            log.warning("push.endpoint_refused", customer_id=device.customer_id, device_id=device.device_id)
            return DeviceOutcome("dead", {"error": f"endpoint refused: {exc}"})

    async def close(self) -> None:
        await self._client.aclose()
        if self._web_client is not None:
            await self._web_client.aclose()
        apns = self._senders.get("apns")
        if isinstance(apns, ApnsSender):
            await apns.close()
