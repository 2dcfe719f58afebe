"""The dashboard page in real headless Chromium (Debian's, driven by Playwright): it shows
the seeded numbers and changes when a report is submitted, live from the stream."""

from __future__ import annotations

import os
import re
import shutil

import asyncpg
import pytest

from civicpulse.config import Settings
from tests.e2e.test_dashboard import settled
from tests.support import TenantKeys, running_server

CHROMIUM = os.environ.get("CIVICPULSE_TEST_CHROMIUM") or shutil.which("chromium")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="no chromium on this machine"
)


async def test_the_page_shows_real_numbers_and_updates_live(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    from playwright.async_api import async_playwright, expect

    assert CHROMIUM is not None, "CI must have Debian's chromium (ops/test.sh installs it)"
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """INSERT INTO issues (tenant_id, id, status, category, opened_at, resolved_at,
                                   sla_started_at)
               SELECT $1, gen_random_uuid(), CASE WHEN g <= 4 THEN 'closed' ELSE 'new' END,
                      'graffiti', now() - interval '3 days',
                      CASE WHEN g <= 4 THEN now() - interval '2 days' END,
                      now() - interval '3 days'
                 FROM generate_series(1, 12) g""",
            tenant_a.id,
        )
    finally:
        await conn.close()
    # Stored public widgets (the map's points, the newest issues) recomputed at once.
    fast = settings.replace(aggregate_tick_seconds=0.2, dashboard_widget_seconds=0.0)
    async with running_server(fast) as client, async_playwright() as pw:
        await settled(db_url)
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            await page.goto(f"{client.base_url}/t/{tenant_a.slug}/dashboard")
            await expect(page.get_by_test_id("opened")).to_have_text("12")
            await expect(page.get_by_test_id("resolved")).to_have_text("4")
            await expect(page.get_by_test_id("open-now")).to_have_text("8")
            await expect(page.locator("#live")).to_contain_text("Live")
            # Accessible: every chart has a label and the controls are labelled.
            assert await page.locator("svg[role=img][aria-label]").count() >= 2
            await expect(page.get_by_role("combobox")).to_be_visible()
            await expect(page.get_by_label("Staff key", exact=False)).to_be_visible()
            await page.keyboard.press("Tab")  # the skip link takes focus first
            focused = await page.evaluate("document.activeElement.textContent")
            assert "Skip" in focused

            r = await client.post(
                f"/v1/tenants/{tenant_a.slug}/reports",
                json={
                    "text": "Graffiti on the library wall",
                    "lat": 34.3,
                    "lon": -118.4,
                    "category": "graffiti",
                },
                headers=tenant_a.headers(),
            )
            assert r.status_code == 202
            await expect(page.get_by_test_id("opened")).to_have_text("13", timeout=20_000)
            await expect(page.get_by_test_id("open-now")).to_have_text("9")
            await expect(page.locator("#events li").first).to_contain_text("issue created")
            # The new issue has a place: the map shows it.
            await expect(page.locator("#map-note")).to_contain_text("1 open issue(s) with a place")
            assert await page.locator("#map path.leaflet-interactive").count() >= 1
            # Names, not codes; the tenant's time zone; "new issues", not "reported".
            await expect(page.locator("#categories")).to_contain_text("Graffiti")
            await expect(page.locator("#subtitle")).to_contain_text("America/Los_Angeles")
            await expect(page.locator("#h-totals + dl")).to_contain_text("New issues")
            # A real time axis: the chart is drawn at its card's width, with the period's
            # first and last days as labels.
            chart = page.locator("#trend-chart svg")
            width = await chart.get_attribute("width")
            card = await page.evaluate("document.getElementById('trend-chart').clientWidth")
            assert width is not None and abs(int(width) - card) <= 1
            assert await chart.locator("text.axis").count() >= 4  # 2 counts, 2-3 dates
            # The period is in the URL, both ways.
            await page.locator("#days").select_option("90")
            await expect(page).to_have_url(re.compile(r"[?&]days=90"))
            await page.goto(f"{client.base_url}/t/{tenant_a.slug}/dashboard?days=7")
            await expect(page.locator("#days")).to_have_value("7")
            await expect(page.locator("#subtitle")).to_contain_text("last 7 days")
        finally:
            await browser.close()
