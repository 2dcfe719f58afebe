"""The resident pages in real headless Chromium (Debian's, driven by Playwright), at phone
width: a resident picks the place on the map, sees the issue already reported there, sends
a report anyway, and follows it by its link."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import asyncpg
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
            "staff": f"/t/{slug}/staff",
            "review": f"/t/{slug}/staff/review",
            "staff-issue": f"/t/{slug}/staff/issues/{done['issue_id']}",
        }
        made = await client.post(
            f"/v1/tenants/{slug}/users",
            json={"login": "ana@example.org", "role": "staff", "password": "correct horse battery"},
            headers=tenant_a.headers("admin"),
        )
        assert made.status_code == 201, made.text
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        failures = []
        try:
            for width, (w, h) in WIDTHS.items():
                page = await browser.new_page(viewport={"width": w, "height": h})
                signed = await page.request.post(
                    f"{client.base_url}/v1/tenants/{slug}/session",
                    data={"login": "ana@example.org", "password": "correct horse battery"},
                )  # the staff pages are audited signed in, as staff see them
                assert signed.status == 200
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


async def test_staff_triage_assign_merge_and_split_in_the_browser(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    """A staff member signs in, finds the issues, assigns one, merges a duplicate into it
    (found by search), splits a report back out, and is told plainly when someone else
    changed the issue meanwhile."""
    from playwright.async_api import async_playwright, expect

    assert CHROMIUM is not None, "CI must have Debian's chromium (ops/test.sh installs it)"
    slug = tenant_a.slug
    admin = tenant_a.headers("admin")
    async with running_server(settings) as client, async_playwright() as pw:
        made = await client.post(
            f"/v1/tenants/{slug}/users",
            json={"login": "ana@example.org", "role": "staff", "password": "correct horse battery"},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        team = await client.put(f"/v1/tenants/{slug}/teams/roads", json={"name": "Roads"},
                                headers=admin)  # fmt: skip
        assert team.status_code in (200, 201), team.text
        # Two potholes a street apart: two issues; then a second report of the first.
        a = await submit(client, tenant_a, "Deep pothole on Main St by the bakery", LAT, LON)
        b = await submit(client, tenant_a, "Pothole outside the bakery on Main", LAT + 0.01, LON)
        (ra, rb) = await grouped(client, tenant_a, [a, b])
        assert ra["issue_id"] != rb["issue_id"]
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1366, "height": 900})
            await page.goto(f"{client.base_url}/t/{slug}/staff")
            await page.get_by_label("Login").fill("ana@example.org")
            await page.get_by_label("Password").fill("correct horse battery")
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#who")).to_contain_text("ana@example.org")
            rows = page.locator("#issues tbody tr")
            await expect(rows).to_have_count(2)

            # Open the second issue, assign it, then merge it into the first.
            await page.goto(f"{client.base_url}/t/{slug}/staff/issues/{rb['issue_id']}")
            await expect(page.get_by_test_id("status")).to_have_text("new")
            await page.get_by_label("Team").fill("roads")
            await page.get_by_role("button", name="Assign").click()
            await expect(page.get_by_test_id("assigned")).to_contain_text("roads")
            await expect(page.get_by_test_id("status")).to_have_text("assigned")
            # Someone else changes it meanwhile: this page's next change is refused plainly.
            other = await client.get(f"/v1/tenants/{slug}/issues/{rb['issue_id']}",
                                     headers=tenant_a.headers("staff"))  # fmt: skip
            changed = await client.patch(
                f"/v1/tenants/{slug}/issues/{rb['issue_id']}",
                json={"visibility": "private", "version": other.json()["version"]},
                headers=tenant_a.headers("staff"),
            )
            assert changed.status_code in (200, 201), changed.text
            await page.get_by_label("Priority").select_option("1")
            await page.get_by_role("button", name="Set priority").click()
            await expect(page.get_by_role("alert")).to_contain_text("Someone changed this issue")
            await page.get_by_role("button", name="Set priority").click()  # now it applies
            await expect(page.get_by_role("alert")).to_have_text("Priority set.")

            await page.get_by_label("Merge into (search)").fill("bakery")
            await page.get_by_role("button", name="Search").click()
            await page.get_by_role("button", name="Merge into this one").click()
            await expect(page.get_by_test_id("status")).to_have_text("duplicate")

            # The first issue now holds both reports; split one back out.
            await page.goto(f"{client.base_url}/t/{slug}/staff/issues/{ra['issue_id']}")
            await expect(page.get_by_test_id("count")).to_have_text("2")
            await page.get_by_role("button", name="Split out the report").first.click()
            await expect(page.get_by_test_id("count")).to_have_text("1")
            await expect(page.locator("#events")).to_contain_text("split")
            # And close it.
            await page.get_by_label("New status").select_option("resolved")
            await page.get_by_role("button", name="Change status").click()
            await expect(page.get_by_test_id("status")).to_have_text("resolved")
        finally:
            await browser.close()


async def test_the_review_queue_corrects_a_category_in_the_browser(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    """A report the classifier was unsure of is in the queue; correcting its category takes
    it out and makes it a staff label the model learns from."""
    from playwright.async_api import async_playwright, expect

    assert CHROMIUM is not None, "CI must have Debian's chromium (ops/test.sh installs it)"
    slug = tenant_a.slug
    async with running_server(settings) as client, async_playwright() as pw:
        made = await client.post(
            f"/v1/tenants/{slug}/users",
            json={"login": "ana@example.org", "role": "staff", "password": "correct horse battery"},
            headers=tenant_a.headers("admin"),
        )
        assert made.status_code == 201
        unsure = await submit(client, tenant_a, "something weird by the fence", LAT, LON)
        sure = await submit(client, tenant_a, "Graffiti on the library wall", LAT, LON + 0.01)
        await grouped(client, tenant_a, [unsure, sure])
        conn = await asyncpg.connect(db_url)
        try:  # as a low confidence would leave it
            await conn.execute(
                "UPDATE reports SET needs_review = (id = $2) WHERE tenant_id = $1",
                tenant_a.id, uuid.UUID(unsure),
            )  # fmt: skip
        finally:
            await conn.close()
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            signed = await page.request.post(
                f"{client.base_url}/v1/tenants/{slug}/session",
                data={"login": "ana@example.org", "password": "correct horse battery"},
            )
            assert signed.status == 200
            await page.goto(f"{client.base_url}/t/{slug}/staff")
            await page.get_by_role("link", name="Reports to review").click()
            queue = page.locator("#queue li")
            await expect(queue).to_have_count(1)
            await expect(queue.first).to_contain_text("something weird by the fence")
            await queue.first.get_by_label("Right category").select_option(label="Graffiti")
            await queue.first.get_by_role("button", name="Correct the category").click()
            await expect(page.get_by_role("alert")).to_have_text("Corrected: Graffiti.")
            await expect(page.locator("#queue li")).to_have_count(0)
        finally:
            await browser.close()
        report = await client.get(f"/v1/tenants/{slug}/reports/{unsure}",
                                  headers=tenant_a.headers("staff"))  # fmt: skip
        assert report.json()["category"] == "graffiti"
        assert report.json()["needs_review"] is False
        left = await client.get(f"/v1/tenants/{slug}/reports", params={"needs_review": "true"},
                                headers=tenant_a.headers("staff"))  # fmt: skip
        assert left.json()["items"] == []
