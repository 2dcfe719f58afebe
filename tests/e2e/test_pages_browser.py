"""The resident pages in real headless Chromium (Debian's, driven by Playwright), at phone
width: a resident picks the place on the map, sees the issue already reported there, sends
a report anyway, and follows it by its link."""

from __future__ import annotations

import os
import shutil

import pytest

from civicpulse.config import Settings
from tests.e2e.test_grouping import grouped, submit
from tests.privacy import LAT, LON
from tests.support import TenantKeys, running_server

CHROMIUM = os.environ.get("CIVICPULSE_TEST_CHROMIUM") or shutil.which("chromium")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="no chromium on this machine"
)


async def test_a_resident_sees_the_nearby_issue_reports_and_follows_it(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    from playwright.async_api import async_playwright, expect

    assert CHROMIUM is not None, "CI must have Debian's chromium (ops/test.sh installs it)"
    async with running_server(settings) as client, async_playwright() as pw:
        # Someone reported a dark streetlight here already.
        first = await submit(
            client, tenant_a, "Streetlight out, the whole corner is dark", LAT, LON
        )
        await grouped(client, tenant_a, [first])
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            await page.goto(f"{client.base_url}/t/{tenant_a.slug}")
            await page.get_by_role("link", name="Report a problem").click()
            await expect(page.get_by_role("heading", level=1)).to_contain_text("Report a problem")
            await page.keyboard.press("Tab")  # the skip link comes first
            assert "Skip" in await page.evaluate("document.activeElement.textContent")

            # The map opens where the tenant's issues are; a tap there picks the place.
            await page.locator("#map").click()
            await expect(page.locator("#where")).to_contain_text("Place chosen on the map")
            await expect(page.locator("#nearby-status")).to_contain_text("1 open issue(s) nearby")
            follow = page.get_by_role("link", name="Follow this instead")
            await expect(follow).to_be_visible()

            await page.get_by_label("What is wrong?").fill("The streetlight by the bus stop is out")
            kind = page.get_by_label("Kind of problem")
            await kind.select_option(label="Streetlight out or damaged")
            await page.get_by_role("button", name="Send the report").click()
            await expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
            await page.get_by_role("link", name="follow your report").click()
            await expect(page.get_by_role("heading", name="Your report")).to_be_visible()
            await expect(page.get_by_test_id("status")).to_have_text(
                "Joined an issue", timeout=20_000
            )
            await expect(page.get_by_test_id("problem")).to_contain_text("2 report(s)")
            await page.get_by_role("link", name="See the issue your report joined").click()
            await expect(page.get_by_test_id("status")).to_have_text("new")
        finally:
            await browser.close()
