"""The journey page's experiments panel and funnel over time, the journeys list's trend, and versions with their
differences, in headless Chromium against the real app: 30 customers go through a journey with a holdout and an
A/B split on the time-skipping server, some of them buy, and every figure the console shows equals the API's."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from contracts.journey import workflow_id
from journeys import parse_journey
from store import journeys as journey_store
from tests.api.console.conftest import ARGS, CHROMIUM, need_chromium, screenshot, sign_in
from tests.support.engine import make_customer, running_engine
from tests.support.mail import SmtpSink, free_port
from tests.support.stack import API_KEY, eventually, serving

CUSTOMERS = 30
READ_KEY = "views-read-key"


def definition(tag: str, subject: str) -> dict[str, Any]:
    return {
        "id": f"views-{tag}",
        "name": f"Views {tag}",
        "trigger": {"event": f"start-{tag}"},
        "goal": {"event": f"order-{tag}", "value_property": "total"},
        "holdout": {"percent": 20, "observe_for": "1h"},
        "steps": [
            {"id": "subject", "type": "split", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
            {"id": "hello", "type": "send", "channel": "email", "template": {"subject": subject, "text": "Hi."}},
            {"id": "linger", "type": "wait", "duration": "1h"},
        ],
    }


def percent(value: float | None) -> str:
    return "\N{EN DASH}" if value is None else f"{100 * value:.1f} %"


def p_text(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


@pytest.mark.timeout(300)  # 30 runs and a real browser: over the default 120 s when the machine is busy
async def test_journey_panels_trend_and_versions_in_headless_chromium(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    need_chromium()
    from playwright.async_api import async_playwright

    tag = uuid.uuid4().hex[:8]
    journey_id = f"views-{tag}"
    await journey_store.publish(pool, parse_journey(definition(tag, "Hello")))
    customers = [await make_customer(pool) for _ in range(CUSTOMERS)]
    buyers = customers[::3]
    port = free_port()
    keys = [{"key": API_KEY, "role": "admin"}, {"key": READ_KEY, "role": "read"}]
    async with (
        running_engine(
            time_skipping_env, pool, smtp_sink, api_keys=keys, public_base_url=f"http://127.0.0.1:{port}"
        ) as engine,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(engine.settings, pool=pool, client=engine.client)),
            base_url="http://parcours.test",
            headers={"X-API-Key": API_KEY},
        ) as api,
    ):
        starts = [{"customer_id": c, "name": f"start-{tag}"} for c in customers]
        assert (await api.post("/v1/events", json={"events": starts})).status_code == 202
        handles = [engine.client.get_workflow_handle(workflow_id(journey_id, c)) for c in customers]

        async def all_started() -> bool:
            for h in handles:
                await h.describe()
            return True

        await eventually(all_started, timeout=60)
        orders = [
            {"customer_id": c, "name": f"order-{tag}", "properties": {"total": 20 + i}} for i, c in enumerate(buyers)
        ]
        assert (await api.post("/v1/events", json={"events": orders})).status_code == 202
        await time_skipping_env.sleep(timedelta(hours=2))  # the waits and the holdout's observation end
        results = [await h.result() for h in handles]
        assert sum(r["status"] == "converted" for r in results) == len(buyers)
        # Version 2 changes the email's subject (running customers would keep version 1).
        assert (await journey_store.publish(pool, parse_journey(definition(tag, "Hello again"))))[0] == 2

        today = datetime.now(UTC).date()

        async def report(since: date, until: date) -> dict[str, Any]:
            params = {"since": since.isoformat(), "until": until.isoformat()}
            answer = await api.get(f"/v1/journeys/{journey_id}/report", params=params)
            assert answer.status_code == 200, answer.text
            return answer.json()  # type: ignore[no-any-return]

        experiments = (await api.get(f"/v1/journeys/{journey_id}/experiments")).json()["experiments"]
        assert [e["step_id"] for e in experiments] == ["subject", "$holdout"]
        today_report = await report(today, today)
        month_report = await report(today - timedelta(days=29), today)
        trend_days = [today - timedelta(days=13 - i) for i in range(14)]
        daily_entered = [(await report(d, d))["entered"] for d in trend_days]
        assert daily_entered[-1] == CUSTOMERS

        app = create_app(engine.settings, pool=pool, client=engine.client)
        async with serving(app, port) as base, async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                context = await browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
                page = await context.new_page()
                await page.goto(f"{base}/console/journeys/{journey_id}/versions")
                assert "/console/login" in page.url  # signed out: the sign-in page first
                await sign_in(page, base, READ_KEY)

                # The trend: the sparkline's label gives the entries of each of the last 14 days.
                spark = page.locator(f'tr[data-journey="{journey_id}"] [data-figure="trend"] svg')
                label = await spark.get_attribute("aria-label") or ""
                figures = label.split(": ", 1)[1].split(" (total")[0]
                assert [int(x) for x in figures.split(", ")] == daily_entered
                assert label.endswith(f"(total {sum(daily_entered)})")

                await page.goto(f"{base}/console/journeys/{journey_id}")
                # The experiments panel: the API's figures and verdict, every arm drawn, the control marked.
                for experiment in experiments:
                    result = experiment["result"]
                    panel = page.locator(f'article[data-experiment="{experiment["step_id"]}"]')
                    verdict = await panel.locator('[data-figure="verdict"]').inner_text()
                    assert verdict == f"Verdict: {result['verdict']}"
                    assert await panel.locator("svg g.arm .dot").count() == len(result["arms"])
                    control = panel.locator(f'svg g.arm.control[data-arm="{result["control"]}"]')
                    assert await control.locator("rect.dot").count() == 1
                    comparisons = {c["arm"]: c for c in result["comparisons"]}
                    for arm in result["arms"]:
                        line = panel.locator(f'tr[data-arm="{arm["name"]}"]')

                        async def cell(name: str, line: Any = line) -> str:
                            return await line.locator(f'[data-figure="{name}"]').inner_text()  # type: ignore[no-any-return]

                        assert await cell("entered") == str(arm["entered"])
                        assert await cell("converted") == str(arm["converted"])
                        assert await cell("rate") == percent(arm["conversion_rate"])
                        assert await cell("interval") == f"{percent(arm['ci_low'])} to {percent(arm['ci_high'])}"
                        c = comparisons.get(arm["name"])
                        if c is None:
                            assert arm["name"] == result["control"]
                            assert await cell("lift") == "control"
                            continue
                        assert (await cell("lift")).startswith(f"{100 * c['lift_abs']:+.1f} points")
                        assert await cell("p-value") == p_text(c["p_value"])
                        assert await cell("always-valid-p") == p_text(c["always_valid_p"])
                    holdout = result["holdout"]
                    incremental = await panel.locator('[data-figure="incremental-conversions"]').inner_text()
                    assert incremental.startswith(f"{holdout['incremental_conversions']:+,.1f} (95% interval ")
                    treated = await panel.locator('[data-figure="treated-conversion"]').inner_text()
                    assert treated.startswith(f"{holdout['treated_converted']} of {holdout['treated_entered']} (")

                # The funnel over time: today's row and the 30 days' totals equal the report's.
                table = page.locator("#funnel-table")
                await page.locator("#funnel summary").click()  # opens the table (a native <details>: no script)
                for row_day, expected in ((today.isoformat(), today_report), ("total", month_report)):
                    row = table.locator(f'tr[data-day="{row_day}"]')

                    async def column(series: str, row: Any = row) -> int:
                        return int(await row.locator(f'td[data-series="{series}"]').inner_text())

                    assert await column("$entered") == expected["entered"]
                    assert await column("$converted") == expected["conversions"]["converted"]
                    for step in expected["steps"]:
                        assert await column(step["step_id"]) == step["reached"], step["step_id"]
                assert await table.locator("tbody tr").count() == 30
                assert await page.locator('#funnel svg polyline[data-series="$entered"]').count() == 1
                await screenshot(page, "console-journey-experiments.png")

                # Another start day: the chart and table cover from that day.
                await page.goto(f"{base}/console/journeys/{journey_id}?since={(today - timedelta(days=6)).isoformat()}")
                assert await table.locator("tbody tr").count() == 7
                bad = await page.goto(f"{base}/console/journeys/{journey_id}?since=yesterday")
                assert bad is not None and bad.status == 400
                assert "since: a day as YYYY-MM-DD" in await page.locator("main").inner_text()

                # Versions: both listed; the diff from 1 to 2 shows the changed subject, marked with - and +.
                await page.goto(f"{base}/console/journeys/{journey_id}")
                await page.get_by_role("link", name="versions").click()
                assert await page.locator("#versions tbody tr").count() == 2
                await page.get_by_label("From version", exact=True).select_option("1")
                await page.get_by_label("to version", exact=True).select_option("2")
                await page.get_by_role("button", name="Compare").click()
                await page.wait_for_url(re.compile(r".*from=1&to=2"))
                removed = [" ".join(t.split()) for t in await page.locator("#diff del").all_text_contents()]
                added = [" ".join(t.split()) for t in await page.locator("#diff ins").all_text_contents()]
                assert removed == ["removed: - subject: Hello"]  # said in words, marked -, not only red
                assert added == ["added: + subject: Hello again"]
                summary = await page.locator("#diff-summary").inner_text()
                assert "1 line(s) added (marked +), 1 removed" in summary
                await screenshot(page, "console-versions-diff.png")
                for query, status in (("from=x", 400), ("from=9", 404), ("to=0", 404)):
                    answer = await page.goto(f"{base}/console/journeys/{journey_id}/versions?{query}")
                    assert answer is not None and answer.status == status, query
                await context.close()

                # 390 px wide: the pages do not scroll sideways (charts scale down or scroll in their own box).
                phone = await browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844})
                page = await phone.new_page()
                await sign_in(page, base, READ_KEY)
                pages = {
                    f"/console/journeys/{journey_id}": "console-journey-experiments-390.png",
                    f"/console/journeys/{journey_id}/versions?from=1&to=2": "console-versions-diff-390.png",
                }
                for path, name in pages.items():
                    await page.goto(base + path)
                    assert await page.evaluate("document.documentElement.scrollWidth") <= 390, path
                    await screenshot(page, name)
                await phone.close()
            finally:
                await browser.close()
