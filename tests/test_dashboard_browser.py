"""The cluster dashboard in real headless Chromium against a real `livecomments cluster` (broadcast, hash)."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Page, expect

from livecomments.benchmarks.common import parse_metrics
from tests.test_cluster import start_cluster_command

pytestmark = pytest.mark.asyncio(loop_scope="session")

POSITIVE = re.compile(r"^(?!0(\.0*)?$)\d")  # a number above zero, as data-value holds it
M = "livecomments_"


async def counters_waste(http: aiohttp.ClientSession, servers: list[str]) -> float:
    """discarded ÷ received, summed over the realtime servers' own /metrics."""
    received = discarded = 0.0
    for url in servers:
        async with http.get(url + "/metrics") as resp:
            values = parse_metrics(await resp.text())
        received += values[M + "broker_messages_received_total"]
        discarded += values[M + "comments_discarded_total"]
    return discarded / received


CROSS_SITE_POST = """url => fetch(url, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
    body: JSON.stringify({videos: 12, viewers: 60, zipf: 1, rate: 25, duration: 120})}).then(() => "sent")"""


async def a_page_elsewhere_cannot_start_a_load(page: Page, http: aiohttp.ClientSession, dashboard: str) -> None:
    """What a page of another origin (another local port: Chromium keeps public sites off loopback)
    could do before: a no-cors text/plain POST, no preflight, and the dashboard started a load run.
    Chromium sends it still; the dashboard refuses it."""
    async def elsewhere(_: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>elsewhere</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        await page.goto(f"http://localhost:{runner.addresses[0][1]}/")
        async with page.expect_response(dashboard + "api/load") as answer:
            assert await page.evaluate(CROSS_SITE_POST, dashboard + "api/load") == "sent"
        assert (await answer.value).status == 403  # its Origin is not the dashboard's
    finally:
        await runner.cleanup()
    async with http.get(dashboard + "api/state") as resp:
        assert (await resp.json())["load"] is None  # no load run started


@pytest.mark.timeout(120)
async def test_load_from_the_dashboard_shows_deliveries_and_the_counters_waste(
    page: Page, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    proc, out = await start_cluster_command(tmp_path, "--strategy", "broadcast", "--policy", "hash")
    try:
        balancer = re.search(r"^url (\S+)", out, re.M).group(1)
        assert f"\ndemo {balancer}/demo/\n" in out
        dashboard = re.search(r"^dashboard (http://\S+/)$", out, re.M).group(1)
        servers = re.findall(r"^  rt\d\s+(\S+)", out, re.M)
        assert len(servers) == 2, out

        await a_page_elsewhere_cannot_start_a_load(page, http, dashboard)

        await page.goto(dashboard)
        await expect(page.locator("#strategy")).to_have_text("broadcast")
        await expect(page.locator("#policy")).to_have_text("hash")
        await expect(page.locator("#servers tbody tr")).to_have_count(2)
        for name, value in {"videos": "12", "viewers": "60", "rate": "25", "duration": "120"}.items():
            await page.fill(f"input[name={name}]", value)
        await page.click("#load-start")
        await expect(page.locator("#load-status")).to_have_attribute("data-state", "running")
        await expect(page.locator("#load-start")).to_be_disabled()
        await expect(page.locator("#total-delivered")).to_have_attribute("data-value", POSITIVE, timeout=20_000)
        for name in ("rt1", "rt2"):  # broadcast: every server receives every comment
            row = page.locator(f"#servers tr[data-server={name}]")
            await expect(row.locator("td[data-field=received_per_s]")).to_have_attribute("data-value", POSITIVE)
            await expect(row.locator("td[data-field=waste]")).to_have_text(re.compile(r"\d+\.\d %"))

        await page.click("#load-stop")
        await expect(page.locator("#load-status")).to_have_attribute("data-state", "stopped")
        await expect(page.locator("#load-start")).to_be_enabled()
        # The page polls once a second and the servers are other processes: poll until the page shows
        # what the counters say (bounded), then check it is the figure the seeds argue about.
        shown, waste = "", -1.0
        async with asyncio.timeout(20):
            while not (shown and abs(float(shown) - waste) < 1e-9):
                await asyncio.sleep(0.25)
                waste = await counters_waste(http, servers)
                shown = await page.locator("#waste-total").get_attribute("data-value") or ""
        assert 0.2 < waste < 0.8  # hash routing: a server has about half the videos' viewers
        await expect(page.locator("#waste-total")).to_have_text(f"{waste * 100:.1f} %")
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rc = await proc.wait()
    assert rc == 0, (await proc.stderr.read()).decode()
