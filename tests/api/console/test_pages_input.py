"""The segments, broadcasts, timeline and consent pages on bad input, signed in (no browser, no Temporal): every
answer is a 4xx page that says what is wrong, never a 5xx; a read-only key may read but not create."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest_asyncio

from api.app import create_app
from config.settings import Settings

ADMIN, READER = "pages-admin-key", "pages-read-key"


async def _signed_in(http: httpx.AsyncClient, key: str) -> str:
    page = await http.get("/console/login")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf is not None
    response = await http.post("/console/login", data={"csrf": csrf.group(1), "api_key": key, "next": "/console"})
    assert response.status_code == 303
    page = await http.get("/console/segments")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf is not None
    return csrf.group(1)


@pytest_asyncio.fixture(loop_scope="session")
async def pages(pool: asyncpg.Pool) -> AsyncIterator[tuple[httpx.AsyncClient, str, httpx.AsyncClient, str]]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        api_keys=[{"key": ADMIN, "role": "admin"}, {"key": READER, "role": "read"}],
    )
    app = create_app(settings, pool=pool, client=None)  # type: ignore[arg-type]  # these pages need no Temporal
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://parcours.test") as admin,
        httpx.AsyncClient(transport=transport, base_url="http://parcours.test") as reader,
    ):
        yield admin, await _signed_in(admin, ADMIN), reader, await _signed_in(reader, READER)


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def test_bad_input_is_a_4xx_page(
    pages: tuple[httpx.AsyncClient, str, httpx.AsyncClient, str], pool: asyncpg.Pool
) -> None:
    http, csrf, _, _ = pages
    customer = f"cust-{uuid.uuid4().hex}"
    assert (await http.get(f"/console/customers/{customer}/timeline")).status_code == 404
    await pool.execute("INSERT INTO customers (id) VALUES ($1)", customer)
    timeline = f"/console/customers/{customer}/timeline"
    assert (await http.get(timeline)).status_code == 200
    for before in ("!!", "e30", _cursor(["2026-01-01T00:00:00", "k"]), _cursor(["2026-01-01T00:00:00Z", "a\x00"]),
                   _cursor([1, 2]), _cursor(["x"]), "A" * 5000):  # fmt: skip
        response = await http.get(timeline, params={"before": before})
        assert response.status_code == 400, (before, response.status_code)
        assert "before:" in response.text
    for before in ("-1", "99999999999999999999999", "x"):
        response = await http.get(f"/console/customers/{customer}/consent", params={"before": before})
        assert 400 <= response.status_code < 500, before
    assert (await http.get("/console/segments/no%20such")).status_code == 404
    assert (await http.get(f"/console/segments/s-{uuid.uuid4().hex[:8]}")).status_code == 404
    assert (await http.get(f"/console/broadcasts/b-{uuid.uuid4().hex[:8]}")).status_code == 404
    assert (await http.get(f"/console/broadcasts/b-{uuid.uuid4().hex[:8]}/explode")).status_code == 404

    new = "/console/broadcasts/new"
    base = {"csrf": csrf, "segment": "", "subject": "Hi", "text": "x", "send_mode": "now"}
    cases = [
        ({"do": "create"}, 422, "choose a named segment"),
        ({"do": "create", "subject": "a\x00b"}, 400, "NUL"),
        ({"do": "preview", "segment": "nope-" + uuid.uuid4().hex[:6]}, 422, "unknown segment"),
        ({"do": "create", "segment": "s", "send_mode": "at", "send_at": "tomorrow"}, 422, "send_at"),
        ({"do": "create", "segment": "s", "send_mode": "at", "send_at": "2030-01-01T10:00+02:00"}, 422, "offset"),
        ({"do": "create", "segment": "s", "send_mode": "soon"}, 422, "send_mode"),
        ({"do": "create", "segment": "s", "channel": "fax"}, 422, "channel"),
        ({"do": "create", "segment": "s", "subject": "{% for %}"}, 422, "template"),
    ]
    for changes, status, words in cases:
        response = await http.post(new, data={**base, **changes})
        assert response.status_code == status, (changes, response.status_code, response.text[-500:])
        assert words in response.text, (changes, words)
    segment = f"s-{uuid.uuid4().hex[:8]}"
    assert (await http.get(f"/console/segments/{segment}")).status_code == 404
    await pool.execute("INSERT INTO segments (id, definition) VALUES ($1, $2)", segment, {"where": None, "events": []})
    preview = {**base, "do": "preview", "segment": segment, "preview_customer": "nobody-" + uuid.uuid4().hex}
    response = await http.post(new, data=preview)
    assert response.status_code == 404 and "unknown customer" in response.text
    response = await http.post(new, data={**preview, "preview_customer": customer, "subject": "Hi {{ customer.id }}"})
    assert response.status_code == 200 and f"Hi {customer}" in response.text
    response = await http.post(new, data={**base, "do": "create"}, headers={"content-type": "text/plain"})
    assert response.status_code == 415
    response = await http.post(new, data={**base, "csrf": "0" * 64, "do": "create"})
    assert response.status_code == 403


async def test_a_read_key_reads_but_does_not_create(
    pages: tuple[httpx.AsyncClient, str, httpx.AsyncClient, str],
) -> None:
    _, _, reader, csrf = pages
    assert (await reader.get("/console/broadcasts")).status_code == 200
    assert "New broadcast" not in (await reader.get("/console/broadcasts")).text
    assert (await reader.get("/console/broadcasts/new")).status_code == 403
    response = await reader.post("/console/broadcasts/new", data={"csrf": csrf, "do": "create", "segment": "x"})
    assert response.status_code == 403 and "needs &#39;write&#39;" in response.text
    response = await reader.post(f"/console/broadcasts/b-{uuid.uuid4().hex[:8]}/cancel", data={"csrf": csrf})
    assert response.status_code == 403
