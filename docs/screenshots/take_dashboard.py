"""`make screenshots`: the cluster dashboard under load, in headless Chromium → docs/screenshots/dashboard.png.

Starts a real cluster (redis-server, a writer, two realtime servers, nginx; broadcast with hash
routing, where the waste shows), its dashboard, and a load run from the dashboard's own form.
Run: .venv/bin/python -m docs.screenshots.take_dashboard   (from the repository root)
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright, expect

from livecomments.ops.cluster import Cluster
from livecomments.ops.dashboard.server import DashboardServer, topology
from tests.fixtures.browser import CHROMIUM

HERE = Path(__file__).parent
POSITIVE = re.compile(r"^(?!0(\.0*)?$)\d")  # a number above zero (the page's CSP forbids evaluated waits)
SETTLE_S = 6  # seconds of load before the shot: the per-second figures have settled by then


async def shoot(url: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        await page.goto(url)
        await page.fill("input[name=viewers]", "400")
        await page.fill("input[name=rate]", "30")
        await page.click("#load-start")
        await expect(page.locator("#total-delivered")).to_have_attribute("data-value", POSITIVE, timeout=30_000)
        await asyncio.sleep(SETTLE_S)  # a screenshot of a moment: nothing to wait for but time
        await page.screenshot(path=HERE / "dashboard.png", full_page=True, animations="disabled")
        await page.click("#load-stop")
        await browser.close()
    print(f"wrote {HERE / 'dashboard.png'}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, Cluster(2, 1, "broadcast", policy="hash", workdir=tmp) as cluster:
        board = DashboardServer(topology(cluster, None))
        try:
            asyncio.run(shoot(board.start()))
        finally:
            board.stop()


if __name__ == "__main__":
    main()
