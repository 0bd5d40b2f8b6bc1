"""The console's session: a sealed cookie (``activities.links.seal``: AES-GCM under the link secret) holding a
random nonce and, once signed in, the API key itself, so a key removed from ``PARCOURS_API_KEYS`` ends every
session made with it at the next request. The CSRF token of every form is an HMAC of the nonce.

The cookie is HttpOnly, SameSite=Strict, path ``/console``, and Secure when the public base URL is https.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request, Response

from activities import links
from config.settings import ROLE_RANK, Role, Settings

COOKIE = "parcours_console"
PURPOSE = "console"
SESSION_SECONDS = 12 * 3600
ANONYMOUS_SECONDS = 3600


@dataclass(frozen=True)
class Session:
    nonce: str
    key: str | None = None
    role: Role | None = None

    def may(self, needed: Role) -> bool:
        return self.role is not None and ROLE_RANK[self.role] >= ROLE_RANK[needed]


def read(request: Request, settings: Settings) -> Session | None:
    """The request's session (signed in or not), or None without a valid cookie. A key no longer accepted
    reads as signed out."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 4096:
        return None
    try:
        payload = links.open_token(settings, token, purpose=PURPOSE)
    except links.InvalidLink:
        return None
    nonce = payload.get("n")
    if not isinstance(nonce, str):
        return None
    key = payload.get("k")
    role = settings.role_of(key) if isinstance(key, str) else None
    return Session(nonce, key if role else None, role)


def write(response: Response, settings: Settings, session: Session) -> None:
    payload = {"n": session.nonce} | ({"k": session.key} if session.key else {})
    ttl = SESSION_SECONDS if session.key else ANONYMOUS_SECONDS
    response.set_cookie(
        COOKIE,
        links.seal(settings, PURPOSE, payload, ttl),
        max_age=ttl,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=settings.public_base_url.lower().startswith("https://"),
    )


def clear(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        COOKIE, path="/console", httponly=True, samesite="strict",
        secure=settings.public_base_url.lower().startswith("https://"),
    )  # fmt: skip


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def csrf_token(settings: Settings, session: Session) -> str:
    secret = settings.link_secret.get_secret_value().encode()
    return hmac.new(secret, b"parcours-console/csrf/" + session.nonce.encode(), hashlib.sha256).hexdigest()


def csrf_ok(settings: Settings, session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(settings, session), token or "")
