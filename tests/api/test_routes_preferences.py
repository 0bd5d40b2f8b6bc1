"""The preference center: opt-in topics, the hosted page (also in a real headless Chromium), one-click unsubscribe."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities import links
from api.app import create_app
from config.settings import Settings
from tests.support.engine import journey_from, make_customer, running_engine
from tests.support.mail import SmtpSink, free_port
from tests.support.stack import API_KEY, eventually, make_settings, serving

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


def api_client(settings: Settings, pool: asyncpg.Pool, env: WorkflowEnvironment) -> httpx.AsyncClient:
    app = create_app(settings, pool=pool, client=env.client)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://parcours.test", headers={"X-API-Key": API_KEY}
    )


@pytest_asyncio.fixture
async def api(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        topics=[{"name": "tips", "label": "Tips", "default": "opt_out"}], interests=["running", "cycling"]
    )
    async with api_client(settings, pool, time_skipping_env) as client:
        client.settings = settings  # type: ignore[attr-defined]
        yield client


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


async def consent_rows(pool: asyncpg.Pool, customer: str) -> list[tuple[str, str, str, str]]:
    rows = await pool.fetch(
        "SELECT scope, name, status, source FROM consent_events WHERE customer_id = $1 ORDER BY id", customer
    )
    return [(r["scope"], r["name"], r["status"], r["source"]) for r in rows]


def send_step(step_id: str, topic: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "send",
        "channel": "email",
        "topic": topic,
        "template": {"subject": f"{step_id} {{{{ customer.first_name }}}}", "text": "News for you."},
        **extra,
    }


# --- the journeys ------------------------------------------------------------------------------------------


async def test_opt_in_topic_is_never_sent_before_consent_then_sent_after_opting_in_on_the_page(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    topic = f"news-{uuid.uuid4().hex[:6]}"
    topics = [{"name": topic, "label": "Product news", "description": "New things we make", "default": "opt_in"}]
    journey = journey_from({"id": "news", "name": "News", "trigger": {"event": "signed_up"}, "steps": [
        send_step("announce", topic)
    ]})  # fmt: skip
    async with running_engine(time_skipping_env, pool, smtp_sink, topics=topics) as engine:
        customer = await make_customer(pool)  # email consent granted, nothing said about the topic
        result = await (await engine.enter(journey, customer)).result()
        assert result.status == "completed"
        assert engine.mail_to(customer) == []
        assert [(r["status"], r["reason"]) for r in await engine.messages(customer)] == [
            ("skipped", f"topic_not_granted:{topic}")
        ]

        async with api_client(engine.settings, pool, time_skipping_env) as http:
            page_path = path_of(links.preferences_url(engine.settings, customer))
            page = await http.get(page_path)
            assert page.status_code == 200, page.text
            assert f'name="topic" value="{topic}"' in page.text
            assert f'value="{topic}" checked' not in page.text  # opt-in: not subscribed yet
            saved = await http.post(
                page_path, data={"channel": "email", "topic": topic, "frequency": "none", "timezone": "Europe/Paris"}
            )
            assert saved.status_code == 200, saved.text
            assert "Saved" in saved.text
            assert f'value="{topic}" checked' in saved.text
        assert (await consent_rows(pool, customer))[-1] == ("topic", topic, "granted", "preference_page")

        handle = await engine.enter(journey, customer)  # a new entry, after the first run closed
        await handle.result()
        assert [m["Subject"] for m in engine.mail_to(customer)] == ["announce Ada"]
        assert [(r["status"], r["reason"]) for r in await engine.messages(customer)] == [
            ("skipped", f"topic_not_granted:{topic}"),
            ("sent", None),
        ]


async def test_one_click_unsubscribe_stops_the_next_step_of_a_running_journey(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    topic = f"tips-{uuid.uuid4().hex[:6]}"  # defined nowhere: opt_out, sent until withdrawn
    journey = journey_from({"id": "drip", "name": "Drip", "trigger": {"event": "signed_up"}, "steps": [
        send_step("first", topic),
        {"id": "a-day", "type": "wait", "duration": "1d"},
        send_step("second", topic),
    ]})  # fmt: skip
    async with running_engine(time_skipping_env, pool, smtp_sink) as engine:
        customer = await make_customer(pool)
        handle = await engine.enter(journey, customer)
        # Nobody awaits the result yet, so the test server does not skip the day: the journey waits in "a-day".
        mails = await eventually(lambda: _mails(engine.mail_to(customer)))
        assert mails[0]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = mails[0]["List-Unsubscribe"].strip("<>")
        assert customer not in url

        async with api_client(engine.settings, pool, time_skipping_env) as http:
            started = time.perf_counter()
            confirm = await http.get(url)  # what a mail scanner does: must not unsubscribe
            assert confirm.status_code == 200
            assert 'value="One-Click"' in confirm.text
            assert await consent_rows(pool, customer) == [("channel", "email", "granted", "test")]
            answer = await http.post(url, content=b"List-Unsubscribe=One-Click", headers={
                "content-type": "application/x-www-form-urlencoded"
            })  # fmt: skip
            assert answer.status_code == 200, answer.text
            assert time.perf_counter() - started < 2
        assert (await consent_rows(pool, customer))[-1] == ("topic", topic, "withdrawn", "one_click_unsubscribe")

        result = await handle.result()  # now the day passes
        assert result.status == "completed"
        assert [(r["step_id"], r["status"], r["reason"]) for r in await engine.messages(customer)] == [
            ("first", "sent", None),
            ("second", "skipped", f"topic_withdrawn:{topic}"),
        ]
        assert len(engine.mail_to(customer)) == 1


async def _mails(mails: list[Any]) -> list[Any]:
    return mails


# --- the pages over HTTP -----------------------------------------------------------------------------------


async def test_tampered_and_expired_links_get_a_clear_page(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    settings: Settings = api.settings  # type: ignore[attr-defined]
    customer = await make_customer(pool)
    good = path_of(links.preferences_url(settings, customer))
    tampered = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    expired = "/preferences/" + links.seal(settings, links.PREFERENCES, {"c": customer}, -60)
    unsubscribe = path_of(links.unsubscribe_url(settings, customer, "email", None))
    cases = [
        ("GET", tampered, 400, "This link is not valid"),
        ("POST", tampered, 400, "This link is not valid"),
        ("GET", "/preferences/not-a-token", 400, "This link is not valid"),
        ("GET", "/preferences/%C3%A9%00", 400, "This link is not valid"),
        ("GET", "/preferences/" + "A" * 5000, 400, "This link is not valid"),
        ("GET", expired, 410, "This link has expired"),
        ("POST", expired, 410, "This link has expired"),
        ("GET", "/preferences/" + unsubscribe.rsplit("/", 1)[1], 400, "This link is not valid"),  # wrong purpose
        ("GET", "/v1/unsubscribe/" + good.rsplit("/", 1)[1], 400, "This link is not valid"),
        ("POST", unsubscribe[:-4], 400, "This link is not valid"),
        ("POST", "/v1/unsubscribe/" + expired.rsplit("/", 1)[1], 400, "This link is not valid"),  # wrong purpose
    ]
    for method, path, status, text in cases:
        response = await api.request(method, path, headers={"X-API-Key": ""}, data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == status, (method, path[:60], response.text[:300])
        assert response.headers["content-type"].startswith("text/html")
        assert text in response.text and "Traceback" not in response.text
        assert '<html lang="en">' in response.text
    assert await consent_rows(pool, customer) == [("channel", "email", "granted", "test")]


async def test_the_form_refuses_bad_input_naming_the_field_and_saves_only_changes(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    settings: Settings = api.settings  # type: ignore[attr-defined]
    customer = await make_customer(pool)
    page = path_of(links.preferences_url(settings, customer))
    for form, field in [
        ({"channel": "fax"}, "channel"),
        ({"topic": "nope"}, "topic"),
        ({"frequency": "hourly"}, "frequency"),
        ({"quiet_start": "21:00"}, "quiet_end"),
        ({"quiet_start": "25:00", "quiet_end": "08:00"}, "quiet_start"),
        ({"preferred_channel": "fax"}, "preferred_channel"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"language": "<script>"}, "language"),
        ({"interest": "skydiving"}, "interest"),
    ]:
        response = await api.post(page, data=form)
        assert response.status_code == 400, (form, response.text[:200])
        assert f"field &#x27;{field}&#x27;" in response.text, (form, field)
        assert "<script>" not in response.text
    response = await api.post(page, content=b"x", headers={"content-type": "application/json"})
    assert response.status_code == 415
    assert await consent_rows(pool, customer) == [("channel", "email", "granted", "test")]

    form = {"channel": "email", "topic": "tips", "frequency": "weekly", "quiet_start": "21:00", "quiet_end": "08:00",
            "preferred_channel": "email", "timezone": "America/New_York", "language": "fr-CA",
            "interest": ["running", "cycling"]}  # fmt: skip
    assert (await api.post(page, data=form)).status_code == 200
    assert (await api.post(page, data=form)).status_code == 200  # the same again appends nothing
    # "tips" is opt_out and email was granted: nothing changed in the ledger.
    assert await consent_rows(pool, customer) == [("channel", "email", "granted", "test")]
    row = await pool.fetchrow("SELECT timezone, locale, attributes FROM customers WHERE id = $1", customer)
    assert (row["timezone"], row["locale"]) == ("America/New_York", "fr-CA")
    keys = ("frequency_cap", "quiet_hours", "preferred_channel", "interests")
    assert {k: row["attributes"].get(k) for k in keys} == {
        "frequency_cap": "weekly", "quiet_hours": "21:00-08:00", "preferred_channel": "email",
        "interests": ["running", "cycling"],
    }  # fmt: skip
    # Unticking everything withdraws, clears the attributes, and keeps the page's other answers.
    assert (await api.post(page, data={"frequency": "none"})).status_code == 200
    assert await consent_rows(pool, customer) == [
        ("channel", "email", "granted", "test"),
        ("channel", "email", "withdrawn", "preference_page"),
        ("topic", "tips", "withdrawn", "preference_page"),
    ]
    attributes = await pool.fetchval("SELECT attributes FROM customers WHERE id = $1", customer)
    assert "frequency_cap" not in attributes and "quiet_hours" not in attributes
    assert attributes["interests"] == [] and attributes["first_name"] == "Ada"


async def test_one_click_needs_the_rfc_8058_body(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    settings: Settings = api.settings  # type: ignore[attr-defined]
    customer = await make_customer(pool)
    url = links.unsubscribe_url(settings, customer, "email", None)
    response = await api.post(url, data={"something": "else"})
    assert response.status_code == 400 and "List-Unsubscribe" in response.text
    response = await api.post(url, data={"List-Unsubscribe": "One-Click"}, headers={"X-API-Key": ""})
    assert response.status_code == 200
    assert (await consent_rows(pool, customer))[-1] == ("channel", "email", "withdrawn", "one_click_unsubscribe")


async def test_topics_api(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    name, configured = f"deals-{uuid.uuid4().hex[:6]}", f"digest-{uuid.uuid4().hex[:6]}"
    settings = make_settings(topics=[{"name": configured, "label": "Digest", "default": "opt_out"}])
    async with api_client(settings, pool, time_skipping_env) as api:
        await _check_topics_api(api, name, configured)


async def _check_topics_api(api: httpx.AsyncClient, name: str, configured: str) -> None:
    assert (await api.get(f"/v1/topics/{name}")).status_code == 404
    response = await api.put(f"/v1/topics/{name}", json={"label": "Deals", "default": "opt_in"})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": name, "label": "Deals", "description": "", "default": "opt_in", "source": "api"}
    assert (await api.get(f"/v1/topics/{configured}")).json()["source"] == "settings"
    response = await api.put(f"/v1/topics/{configured}", json={"label": "Digest!", "default": "opt_in"})
    assert response.json()["source"] == "api"  # the API's definition wins
    listed = {t["name"]: t for t in (await api.get("/v1/topics")).json()}
    assert listed[configured]["default"] == "opt_in" and listed[name]["label"] == "Deals"
    bad = await api.put(f"/v1/topics/{name}", json={"default": "sometimes"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "default"
    assert (await api.put("/v1/topics/bad name!", json={"default": "opt_in"})).status_code == 422
    assert (await api.get("/v1/topics", headers={"X-API-Key": "wrong"})).status_code == 401


# --- a real browser ----------------------------------------------------------------------------------------


async def test_preference_page_in_headless_chromium(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    if not (os.path.exists(CHROMIUM) and shutil.which("chromium")):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is missing at {CHROMIUM}: .ci/run installs it with apt-get")
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    port = free_port()
    topic = f"news-{uuid.uuid4().hex[:6]}"
    settings = make_settings(
        public_base_url=f"http://127.0.0.1:{port}",
        topics=[{"name": topic, "label": "Product news", "description": "What we launch", "default": "opt_in"}],
        interests=["running", "cycling", "swimming"],
    )
    customer = await make_customer(pool, consent=())
    async with serving(create_app(settings, pool=pool, client=time_skipping_env.client), port):
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )  # fmt: skip
            try:
                context = await browser.new_context(java_script_enabled=False)  # the page needs none
                page = await context.new_page()
                response = await page.goto(links.preferences_url(settings, customer))
                assert response is not None and response.status == 200
                assert await page.get_attribute("html", "lang") == "en"
                # Every control is reachable by its label (accessible names).
                await page.get_by_label("Email").check()
                await page.get_by_label("Product news").check()
                await page.get_by_label("At most one message a week").check()
                await page.get_by_label("From").fill("21:30")
                await page.get_by_label("Until").fill("07:45")
                await page.get_by_label("Preferred channel").select_option("email")
                await page.get_by_label("Time zone").select_option("Europe/Paris")
                await page.get_by_label("Language").fill("fr")
                await page.get_by_label("Running").check()
                await page.get_by_label("Swimming").check()
                await page.get_by_role("button", name="Save preferences").focus()
                await page.keyboard.press("Enter")  # keyboard only
                await page.get_by_role("status").wait_for()
                assert "Saved" in await page.get_by_role("status").inner_text()
                assert await page.get_by_label("Product news").is_checked()
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "preference-page.png"), full_page=True)
                await context.close()
            finally:
                await browser.close()

    assert await consent_rows(pool, customer) == [
        ("channel", "email", "granted", "preference_page"),
        ("topic", topic, "granted", "preference_page"),
    ]
    row = await pool.fetchrow("SELECT timezone, locale, attributes FROM customers WHERE id = $1", customer)
    assert (row["timezone"], row["locale"]) == ("Europe/Paris", "fr")
    attributes = row["attributes"]
    assert attributes["interests"] == ["running", "swimming"]
    assert (attributes["frequency_cap"], attributes["quiet_hours"], attributes["preferred_channel"]) == (
        "weekly", "21:30-07:45", "email"
    )  # fmt: skip
    assert (ARTIFACTS / "preference-page.png").stat().st_size > 10_000


async def test_a_topic_label_with_a_nul_character_is_refused_naming_the_field(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    settings = Settings(api_keys=["k"])
    app = create_app(settings, pool=pool, client=time_skipping_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.put(
            "/v1/topics/nul-test", json={"label": "bad\u0000label", "default": "opt_in"}, headers={"X-API-Key": "k"}
        )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "label"


async def test_the_form_names_every_bad_field_each_next_to_its_field(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    settings: Settings = api.settings  # type: ignore[attr-defined]
    customer = await make_customer(pool)
    page = path_of(links.preferences_url(settings, customer))
    form = {
        "channel": "fax",
        "frequency": "hourly",
        "quiet_start": "25:00",
        "quiet_end": "08:00",
        "timezone": "Mars/Olympus",
        "language": "<script>",
    }
    response = await api.post(page, data=form)
    assert response.status_code == 400
    html = response.text
    assert "5 things need fixing; nothing was saved." in html
    # Each message right after its own field: nothing else with a name between them.
    for field, control, message in [
        ("channel", 'id="channels"', "unknown channel &#x27;fax&#x27;"),
        ("frequency", 'id="frequencies"', "choose one of"),
        ("quiet_start", 'id="quiet_start"', "quiet hours must be times"),
        ("timezone", 'id="timezone"', "unknown time zone &#x27;Mars/Olympus&#x27;"),
        ("language", 'id="language"', "&#x27;&lt;script&gt;&#x27; is not a language code"),
    ]:
        error = html.index(f'<p class="field-error" id="{field}-error">')
        between = html[html.index(control) : error]
        assert message in html[error : html.index("</p>", error)], field
        assert between.count('class="field-error"') == 0 and between.count("<fieldset") == 0, field
        assert f"{field}-error" in between  # the field points at its message (aria-describedby)
        assert f"(field &#x27;{field}&#x27;)" in html  # and the list at the top names it
    assert "<script>" not in html
    assert await consent_rows(pool, customer) == [("channel", "email", "granted", "test")]  # nothing saved
