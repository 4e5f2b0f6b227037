"""The demo page rides out a server restart: reconnects, catches up, and shows every comment once."""

from __future__ import annotations

import signal

import aiohttp
import pytest
from playwright.async_api import Page, expect

from tests.fixtures.browser import shown_seqs
from tests.fixtures.processes import Spawn, free_port
from tests.helpers import post

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Records every connection state the page shows from now on, in window.connStates.
RECORD_STATES = """() => {
  window.connStates = [];
  const conn = document.getElementById("conn");
  new MutationObserver(() => window.connStates.push(conn.dataset.state))
    .observe(conn, {attributes: true, attributeFilter: ["data-state"]});
}"""


async def test_restart_loses_and_doubles_nothing(page: Page, http: aiohttp.ClientSession, spawn: Spawn) -> None:
    args = ("--port", str(free_port()))  # the test's SQLite file: the same after the restart
    env = {"LIVECOMMENTS_RATE_LIMIT_PER_S": "0"}
    server = spawn(*args, env=env)
    for n in range(1, 4):
        await post(http, server.url, "r", f"before {n}")
    await page.goto(f"{server.url}/demo/?video=r")
    conn = page.locator("#conn")
    await expect(conn).to_have_attribute("data-state", "live")
    await post(http, server.url, "r", "live 4")
    await expect(page.locator("#comments > li")).to_have_count(4)
    await page.evaluate(RECORD_STATES)

    server.stop(signal.SIGTERM)
    await expect(conn).to_have_attribute("data-state", "reconnecting")
    server = spawn(*args, env=env)  # same port, same SQLite file
    # posted while the page is still away (EventSource retries after `retry: 2000`): caught up on resume
    for n in range(5, 8):
        await post(http, server.url, "r", f"missed {n}")
    await expect(conn).to_have_attribute("data-state", "live")
    await post(http, server.url, "r", "live 8")
    await expect(page.locator("#comments > li")).to_have_count(8)
    assert await shown_seqs(page) == list(range(1, 9))
    texts = await page.locator("#comments .text").all_text_contents()
    assert texts == ["before 1", "before 2", "before 3", "live 4", "missed 5", "missed 6", "missed 7", "live 8"]
    # what the reader was told meanwhile: each state once, in this order
    states = await page.evaluate("window.connStates")
    assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s] == ["reconnecting", "catching-up", "live"]
