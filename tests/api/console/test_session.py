"""The console's session cookie as a browser receives it: HttpOnly (no script reads it), SameSite=Strict (no other
site's form or link carries it), scoped to /console, Secure once the console is served over https; and it holds
no readable API key."""

from __future__ import annotations

import re

import asyncpg
import httpx
import pytest

from api.app import create_app
from config.settings import Settings

KEY = "session-cookie-admin-key"


@pytest.mark.parametrize("base", ["http://parcours.test", "https://parcours.example"])
async def test_the_session_cookie_is_httponly_strict_and_secure_over_https(pool: asyncpg.Pool, base: str) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        api_keys=[{"key": KEY, "role": "admin"}],
        public_base_url=base,
    )
    app = create_app(settings, pool=pool, client=None)  # type: ignore[arg-type]  # signing in needs no Temporal
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as http:
        page = await http.get("/console/login")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        signed = await http.post("/console/login", data={"csrf": csrf.group(1), "api_key": KEY, "next": "/console"})
        assert signed.status_code == 303
        [cookie] = [c for c in signed.headers.get_list("set-cookie") if c.startswith("parcours_console=")]
        flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
        assert "httponly" in flags
        assert flags["samesite"].lower() == "samesite=strict"
        assert flags["path"] == "Path=/console"
        assert ("secure" in flags) == base.startswith("https://")
        assert KEY not in cookie  # sealed, not readable
        # The cookie is what signs the browser in: without it, the console sends it back to the sign-in page.
        assert (await http.get("/console/journeys")).status_code == 200
        http.cookies.clear()
        assert (await http.get("/console/journeys")).headers["location"].startswith("/console/login")


async def test_every_page_names_an_icon_this_server_serves(pool: asyncpg.Pool) -> None:
    """Without one, the browser asks for /favicon.ico, which 404s: a red error in the console on every first load."""
    settings = Settings(_env_file=None, api_keys=[{"key": KEY, "role": "admin"}])  # type: ignore[call-arg]
    app = create_app(settings, pool=pool, client=None)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://parcours.test") as http:
        page = await http.get("/console/login")
        icon = re.search(r'<link rel="icon" href="([^"]+)"', page.text)
        assert icon is not None and icon.group(1).startswith("/")  # from this server, as the CSP requires
        served = await http.get(icon.group(1))
        assert served.status_code == 200 and served.headers["content-type"].startswith("image/")
