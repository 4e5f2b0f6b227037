"""`make screenshots`: the demo page at desktop and phone widths, in headless Chromium, as PNGs here.

Starts a real `livecomments serve` on a free port with a throwaway SQLite file, posts a short
conversation, opens the page with a second viewer watching, and shoots it.
Run: .venv/bin/python -m docs.screenshots.take   (from the repository root)
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

import aiohttp
from playwright.async_api import Browser, ViewportSize, async_playwright

from tests.fixtures.browser import CHROMIUM
from tests.fixtures.processes import LivecommentsProcess

HERE = Path(__file__).parent
VIDEO = "launch-keynote"
CONVERSATION = [
    ("Ana Lima", "Made it just in time, is the stream starting?"),
    ("Bo", "audio is perfect from Lisbon"),
    ("Chidi Okeke", "They just said the new server handles a million viewers per video"),
    ("Dana", "Hi everyone"),
    ("Ana Lima", "Does the demo run on a laptop too?"),
    ("Erik", "yes, `livecomments serve` needs nothing else installed"),
    ("Fatima Zahra", "The fan-out chart is wild: partitioned wastes nothing"),
    ("Bo", "who else is watching from the office?"),
    ("Grace", "Question for Q&A: how do you keep comments in order across servers?"),
    ("Chidi Okeke", "seq per video, assigned in the same transaction as the insert"),
]
SHOTS: list[tuple[str, ViewportSize, int, bool]] = [
    ("demo-desktop.png", {"width": 1280, "height": 760}, 1, False),
    ("demo-phone.png", {"width": 390, "height": 844}, 2, True),
]


async def shoot(browser: Browser, url: str) -> None:
    watcher = await browser.new_page()  # a second viewer, so the count shows more than one
    await watcher.goto(f"{url}/demo/?video={VIDEO}")
    await watcher.locator("#conn[data-state=live]").wait_for()
    for name, viewport, scale, mobile in SHOTS:
        context = await browser.new_context(viewport=viewport, device_scale_factor=scale, is_mobile=mobile,
                                            has_touch=mobile)
        page = await context.new_page()
        await page.goto(f"{url}/demo/?video={VIDEO}")
        await page.locator("#conn[data-state=live]").wait_for()
        await page.fill("#name-input", "Henri")
        await page.fill("#text-input", "This is great, the comments show up instantly!")
        await page.locator("#text-input").blur()
        await page.screenshot(path=HERE / name, animations="disabled")
        await context.close()
        print(f"wrote {HERE / name}")
    await watcher.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = LivecommentsProcess(
            ["--port", "0", "--storage", f"sqlite:///{tmp}/demo.db"], Path(tmp) / "serve.log",
            env={"LIVECOMMENTS_RATE_LIMIT_PER_S": "0"},
        ).start()
        try:
            async with aiohttp.ClientSession() as http:
                for author, text in CONVERSATION:
                    async with http.post(f"{server.url}/v1/videos/{VIDEO}/comments",
                                         json={"author": author, "text": text}) as response:
                        response.raise_for_status()
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                await shoot(browser, server.url)
                await browser.close()
        finally:
            server.stop(signal.SIGTERM)


if __name__ == "__main__":
    asyncio.run(main())
