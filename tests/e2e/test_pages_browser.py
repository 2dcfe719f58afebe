"""The resident pages in real headless Chromium (Debian's, driven by Playwright), at phone
width: a resident picks the place on the map, sees the issue already reported there, sends
a report anyway, and follows it by its link."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

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


AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe.min.js"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDTHS = {"desktop": (1366, 900), "phone": (390, 844)}
# The serious and critical violations axe finds on the page.
AUDIT = """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => v.id + ": " + v.help + " " + JSON.stringify(v.nodes.map((n) => n.target)))"""


async def test_every_page_passes_an_axe_audit(settings: Settings, tenant_a: TenantKeys) -> None:
    """axe-core (vendored, tests/vendor) on every page, at desktop and phone width: no
    serious or critical violation. CIVICPULSE_TEST_SCREENSHOTS=1 also writes each page's picture
    to docs/screenshots (the README shows them)."""
    from playwright.async_api import async_playwright

    assert CHROMIUM is not None, "CI must have Debian's chromium (ops/test.sh installs it)"
    shots = os.environ.get("CIVICPULSE_TEST_SCREENSHOTS") == "1"
    async with running_server(settings) as client, async_playwright() as pw:
        report = await submit(
            client, tenant_a, "Streetlight out, the whole corner is dark", LAT, LON
        )
        (done,) = await grouped(client, tenant_a, [report])
        token = await client.get(f"/t/{tenant_a.slug}/report")
        form = re.search(r'"token": "([^"]+)"', token.text)
        assert form is not None
        secret = "s" * 32
        sent = await client.post(
            f"/t/{tenant_a.slug}/report",
            json={"token": form.group(1), "text": "Another dark streetlight", "lat": LAT,
                  "lon": LON, "track": secret},
        )  # fmt: skip
        assert sent.status_code == 202
        slug = tenant_a.slug
        pages = {
            "landing": "/",
            "home": f"/t/{slug}",
            "report": f"/t/{slug}/report",
            "track": sent.json()["track"],
            "issue": f"/t/{slug}/issues/{done['issue_id']}",
            "dashboard": f"/t/{slug}/dashboard",
        }
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        failures = []
        try:
            for width, (w, h) in WIDTHS.items():
                page = await browser.new_page(viewport={"width": w, "height": h})
                for name, path in pages.items():
                    await page.goto(f"{client.base_url}{path}")
                    # Streams keep the network busy: the page's data arrive within a moment.
                    await page.wait_for_load_state("load")
                    await page.wait_for_timeout(800)
                    await page.add_script_tag(path=str(AXE))
                    found = await page.evaluate(AUDIT)
                    failures += [f"{name} at {width}: {v}" for v in found]
                    if shots:
                        SHOTS.mkdir(parents=True, exist_ok=True)
                        await page.screenshot(
                            path=str(SHOTS / f"{name}-{width}.png"), full_page=True
                        )
                await page.close()
        finally:
            await browser.close()
    assert not failures, "\n".join(failures)
