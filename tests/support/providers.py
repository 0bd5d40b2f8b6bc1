"""Fakes of the SMS and push providers, written from their public documentation, each on its own loopback port.

They check what the real provider checks and answer its documented success and error bodies:

- ``TwilioFake``: the Messages API (HTTP Basic with the account SID and auth token, form fields, E.164 numbers,
  error documents with Twilio's codes) and, after each accepted message, status callbacks ``sent`` then
  ``delivered`` (or ``undelivered`` with an error code) signed with ``X-Twilio-Signature``; ``inbound`` sends a
  signed inbound message as Twilio would.
- ``FcmFake``: an OAuth2 token endpoint that verifies the service account's RS256 JWT under the jwt-bearer grant,
  and FCM HTTP v1 ``messages:send`` checking the Bearer token and the JSON shape; a dead token answers
  ``UNREGISTERED``, a token of another Firebase project ``SENDER_ID_MISMATCH``, another project in the path
  ``PERMISSION_DENIED``; ``unavailable`` makes a token's next sends answer ``503 UNAVAILABLE``.
- ``WebPushFake``: a push service that verifies the VAPID JWT (ES256, audience, expiry) and DECRYPTS the
  aes128gcm body with the subscription's private key, answering 201, or 410 for a subscription that is gone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import http_ece
import httpx
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.routes_sms import twilio_signature


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 and a free port for as long as the block runs; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


# --- Twilio ------------------------------------------------------------------------------------------------------

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass
class TwilioMessage:
    sid: str
    to: str
    sender: str
    body: str
    status_callback: str | None
    form: dict[str, str]


@dataclass
class TwilioFake:
    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    url: str = ""
    messages: list[TwilioMessage] = field(default_factory=list)
    opted_out: set[str] = field(default_factory=set)
    """Numbers that texted STOP: sending to them is refused with 21610."""
    undeliverable: dict[str, int] = field(default_factory=dict)
    """Numbers whose messages end ``undelivered`` with this error code (e.g. 30005)."""
    callbacks: list[tuple[str, dict[str, str], int]] = field(default_factory=list)
    """(url, params, our answer's status) of every status callback sent."""
    callback_client: httpx.AsyncClient | None = None
    """Where callbacks go (an ASGI client on the app under test); None: no callbacks."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/2010-04-01/Accounts/{sid}/Messages.json", self._create, methods=["POST"])])

    @staticmethod
    def _error(status: int, code: int, message: str) -> JSONResponse:
        return JSONResponse(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status_code=status,
        )

    async def _create(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if auth != expected or request.path_params["sid"] != self.account_sid:
            return self._error(401, 20003, "Authenticate")
        if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return self._error(400, 20001, "Form-encoded body expected")
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        to, body = form.get("To", ""), form.get("Body", "")
        sender = form.get("From") or form.get("MessagingServiceSid")
        if not to:
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not sender:
            return self._error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return self._error(400, 21602, "Message body is required.")
        if not E164.match(to):
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in self.opted_out:
            return self._error(400, 21610, "Attempt to send to unsubscribed recipient")
        sid = "SM" + secrets.token_hex(16)
        message = TwilioMessage(sid, to, sender, body, form.get("StatusCallback"), form)
        self.messages.append(message)
        if message.status_callback and self.callback_client is not None:
            task = asyncio.create_task(self._callbacks(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return JSONResponse(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": to,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": body,
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
            status_code=201,
        )

    def signed(self, url: str, params: dict[str, str]) -> dict[str, str]:
        return {"X-Twilio-Signature": twilio_signature(self.auth_token, url, list(params.items()))}

    async def post_signed(self, url: str, params: dict[str, str], *, tamper: bool = False) -> httpx.Response:
        assert self.callback_client is not None
        headers = self.signed(url, params)
        if tamper:
            params = {**params, "MessageStatus": "delivered"} if "MessageStatus" in params else {**params, "Body": "x"}
        return await self.callback_client.post(url, data=params, headers=headers)

    async def _callbacks(self, message: TwilioMessage) -> None:
        assert message.status_callback
        base = {"AccountSid": self.account_sid, "MessageSid": message.sid, "SmsSid": message.sid, "To": message.to}
        code = self.undeliverable.get(message.to)
        statuses = [{"MessageStatus": "sent"}]
        statuses.append(
            {"MessageStatus": "undelivered", "ErrorCode": str(code)} if code else {"MessageStatus": "delivered"}
        )
        for extra in statuses:
            params = {**base, "From": message.sender, **extra}
            response = await self.post_signed(message.status_callback, params)
            self.callbacks.append((message.status_callback, params, response.status_code))

    async def settle(self) -> None:
        """Wait until every status callback has been sent."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def inbound(self, url: str, sender: str, body: str) -> httpx.Response:
        """An SMS from ``sender`` to our number, as Twilio posts it to the messaging webhook."""
        params = {
            "AccountSid": self.account_sid,
            "MessageSid": "SM" + secrets.token_hex(16),
            "From": sender,
            "To": "+15005550006",
            "Body": body,
            "NumMedia": "0",
        }
        return await self.post_signed(url, params)


# --- FCM ---------------------------------------------------------------------------------------------------------


@dataclass
class FcmFake:
    project_id: str = "parcours-test"
    url: str = ""
    dead_tokens: set[str] = field(default_factory=set)
    other_sender_tokens: set[str] = field(default_factory=set)
    """Tokens registered by an app of another Firebase project: ``403 SENDER_ID_MISMATCH``."""
    unavailable: dict[str, int] = field(default_factory=dict)
    """Token -> how many more sends to it answer ``503 UNAVAILABLE`` (FCM overloaded) before it is served."""
    sent: list[dict[str, Any]] = field(default_factory=list)
    token_requests: int = 0
    _issued: set[str] = field(default_factory=set)
    _key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _email: str = "parcours@parcours-test.iam.gserviceaccount.com"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def service_account_file(self, directory: Path) -> Path:
        """A service account key file as Google's console writes it, with our token endpoint."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        path = directory / "service-account.json"
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": self.project_id,
                    "private_key_id": "key-1",
                    "private_key": pem,
                    "client_email": self._email,
                    "client_id": "1234567890",
                    "token_uri": self.token_uri,
                }
            )
        )
        return path

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/v1/projects/{project}/messages:send", self._send, methods=["POST"]),
            ]
        )

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        try:
            claims = jwt.decode(
                str(form.get("assertion")),
                self._key.public_key(),
                algorithms=["RS256"],
                audience=self.token_uri,
                issuer=self._email,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            return JSONResponse({"error": "invalid_grant", "error_description": str(exc)}, status_code=400)
        if "https://www.googleapis.com/auth/firebase.messaging" not in str(claims.get("scope", "")).split():
            return JSONResponse({"error": "invalid_scope"}, status_code=400)
        self.token_requests += 1
        token = "ya29." + secrets.token_urlsafe(24)
        self._issued.add(token)
        return JSONResponse({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    @staticmethod
    def _error(status: int, state: str, message: str, code: str | None = None) -> JSONResponse:
        details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}] if code else []
        return JSONResponse(
            {"error": {"code": status, "message": message, "status": state, "details": details}}, status_code=status
        )

    async def _send(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or token not in self._issued:
            return self._error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if request.path_params["project"] != self.project_id:
            # The service account may not send for that project, whatever the token.
            return self._error(403, "PERMISSION_DENIED", "The caller does not have permission")
        try:
            body = await request.json()
            message = body["message"]
            target = message["token"]
            notification = message.get("notification", {})
            assert isinstance(target, str) and target
            assert set(notification) <= {"title", "body", "image"}
            assert all(isinstance(v, str) for v in message.get("data", {}).values())
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.", "INVALID_ARGUMENT")
        if self.unavailable.get(target, 0) > 0:
            self.unavailable[target] -= 1
            return self._error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")
        if target in self.dead_tokens:
            return self._error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if target in self.other_sender_tokens:
            return self._error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
        self.sent.append(message)
        return JSONResponse({"name": f"projects/{self.project_id}/messages/{secrets.token_hex(8)}"})


# --- Web Push ----------------------------------------------------------------------------------------------------


@dataclass
class WebSubscriber:
    """A browser's push subscription: its keys stay here so the fake can decrypt."""

    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    endpoint: str

    def subscription(self) -> dict[str, Any]:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"endpoint": self.endpoint, "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)}}


@dataclass
class WebPushFake:
    url: str = ""
    subscribers: dict[str, WebSubscriber] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    received: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    """(subscriber id, decrypted payload, headers) per push accepted."""
    vapid_public_key: str | None = None
    """When set, only this application server key is accepted (the browser subscribed with it)."""

    def subscribe(self) -> WebSubscriber:
        sub_id = secrets.token_hex(8)
        subscriber = WebSubscriber(
            sub_id, ec.generate_private_key(ec.SECP256R1()), secrets.token_bytes(16), f"{self.url}/push/{sub_id}"
        )
        self.subscribers[sub_id] = subscriber
        return subscriber

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/push/{sub}", self._push, methods=["POST"])])

    async def _push(self, request: Request) -> Response:
        sub_id = request.path_params["sub"]
        subscriber = self.subscribers.get(sub_id)
        if subscriber is None or sub_id in self.gone:
            return Response(status_code=410)
        match = re.fullmatch(r"vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)", request.headers.get("authorization", ""))
        if match is None:
            return Response("missing VAPID authorization", status_code=401)
        token, key = match.groups()
        if self.vapid_public_key is not None and key != self.vapid_public_key:
            return Response("application server key mismatch", status_code=403)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
        try:
            claims = jwt.decode(token, public, algorithms=["ES256"], audience=self.url, options={"require": ["exp"]})
        except jwt.PyJWTError as exc:
            return Response(f"invalid VAPID token: {exc}", status_code=403)
        if claims["exp"] > time.time() + 24 * 3600 or not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return Response("VAPID exp over 24 hours or sub not a contact", status_code=403)
        if request.headers.get("content-encoding") != "aes128gcm" or "ttl" not in request.headers:
            return Response("Content-Encoding aes128gcm and TTL required", status_code=400)
        body = await request.body()
        try:
            plain = http_ece.decrypt(
                body, private_key=subscriber.private_key, auth_secret=subscriber.auth, version="aes128gcm"
            )
        except Exception as exc:  # any decryption failure is the sender's
            return Response(f"cannot decrypt: {exc}", status_code=400)
        self.received.append((sub_id, json.loads(plain), dict(request.headers)))
        return Response(status_code=201, headers={"location": f"{self.url}/message/{secrets.token_hex(6)}"})


@contextlib.asynccontextmanager
async def running(fake: Any) -> AsyncIterator[Any]:
    """Serve a fake on its own loopback port; ``fake.url`` is set while the block runs."""
    async with serve(fake.app()) as url:
        fake.url = url
        yield fake


Signed = Callable[[str, dict[str, str]], Awaitable[httpx.Response]]
