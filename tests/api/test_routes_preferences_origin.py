"""The public preference and unsubscribe POSTs refuse cross-site forms; RFC 8058 one-click POSTs keep working."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities import links
from api.app import create_app
from tests.support.engine import make_customer
from tests.support.stack import make_settings

PUBLIC = "https://prefs.shop.test"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest_asyncio.fixture
async def site(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(public_base_url=PUBLIC)
    app = create_app(settings, pool=pool, client=time_skipping_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC) as http:
        http.settings = settings  # type: ignore[attr-defined]
        yield http


async def consent(pool: asyncpg.Pool, customer: str) -> list[tuple[str, str, str]]:
    rows = await pool.fetch(
        "SELECT name, status, source FROM consent_events WHERE customer_id = $1 ORDER BY id", customer
    )
    return [(r["name"], r["status"], r["source"]) for r in rows]


async def test_a_cross_site_preference_form_is_refused_and_changes_nothing(
    site: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    customer = await make_customer(pool, consent=("email",))
    path = "/" + links.preferences_url(site.settings, customer).split("/", 3)[3]  # type: ignore[attr-defined]
    before = await consent(pool, customer)
    form = "frequency="  # unticking every channel: a withdrawal of email
    for headers in (
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"origin": "null", "sec-fetch-site": "cross-site"},
        {"origin": "http://prefs.shop.test"},  # another scheme is another origin
        {"sec-fetch-site": "cross-site"},
    ):
        refused = await site.post(path, content=form, headers={**FORM, **headers})
        assert refused.status_code == 403, (headers, refused.text[:200])
        assert "another site" in refused.text
    assert await consent(pool, customer) == before

    same = await site.post(path, content=form, headers={**FORM, "origin": PUBLIC, "sec-fetch-site": "same-origin"})
    assert same.status_code == 200, same.text[:300]
    # What a browser sends from the page itself under its no-referrer policy.
    hidden = await site.post(path, content=form, headers={**FORM, "origin": "null", "sec-fetch-site": "same-origin"})
    assert hidden.status_code == 200, hidden.text[:300]
    assert (await consent(pool, customer))[-1] == ("email", "withdrawn", "preference_page")


async def test_one_click_unsubscribe_without_origin_works_and_a_cross_site_one_does_not(
    site: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    customer = await make_customer(pool, consent=("email",))
    url = links.unsubscribe_url(site.settings, customer, "email", None)  # type: ignore[attr-defined]
    path = "/" + url.split("/", 3)[3]
    body = b"List-Unsubscribe=One-Click"
    forged = await site.post(path, content=body, headers={**FORM, "origin": "https://evil.example"})
    assert forged.status_code == 403
    assert await consent(pool, customer) == [("email", "granted", "test")]
    # What Gmail or Yahoo send (RFC 8058): a POST from their servers, with no Origin.
    provider = await site.post(path, content=body, headers=FORM)
    assert provider.status_code == 200, provider.text[:300]
    assert (await consent(pool, customer))[-1] == ("email", "withdrawn", "one_click_unsubscribe")
