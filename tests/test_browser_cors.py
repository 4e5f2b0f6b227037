"""Issue 12 item 7 in a real browser: a page on another origin streams and posts when cors_origins
lists it, and is refused by the browser itself when it does not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Page

from tests.fixtures.processes import Spawn, free_port
from tests.helpers import all_comments

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The other origin's page: streams the video from the API's origin and posts to it (a preflighted
# POST: JSON with an Idempotency-Key) when the test calls post(). window.result: what the browser let it see.
PAGE = """<!doctype html><meta charset="utf-8"><script>
const api = new URLSearchParams(location.search).get("api");
window.result = {open: false, comments: [], streamError: false, post: null};
const source = new EventSource(api + "/v1/videos/x/stream?since=0");
source.addEventListener("open", () => { window.result.open = true; });
source.addEventListener("comment", (e) => window.result.comments.push(JSON.parse(e.data).text));
source.addEventListener("error", () => { if (source.readyState === EventSource.CLOSED) window.result.streamError = true; });
window.post = () => fetch(api + "/v1/videos/x/comments", {method: "POST",
    headers: {"Content-Type": "application/json", "Idempotency-Key": "k1"},
    body: JSON.stringify({author: "other-origin", text: "cross-origin hello"})})
  .then((r) => { window.result.post = r.status; }, () => { window.result.post = "blocked"; });
</script>"""


@pytest_asyncio.fixture(loop_scope="session")
async def page_origins() -> AsyncIterator[list[str]]:
    """Two origins serving PAGE: the first is allowed by the API server, the second is not."""
    app = web.Application()

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    origins = []
    for _ in range(2):
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        origins.append(f"http://127.0.0.1:{port}")
    yield origins
    await runner.cleanup()


@pytest.fixture
def api(spawn: Spawn, page_origins: list[str]) -> str:
    env = {"LIVECOMMENTS_RATE_LIMIT_PER_S": "0", "LIVECOMMENTS_CORS_ORIGINS": page_origins[0]}
    return spawn(env=env).url


async def test_an_allowed_origin_streams_and_posts(page: Page, page_origins: list[str], api: str) -> None:
    await page.goto(f"{page_origins[0]}/?api={api}")
    await page.wait_for_function("window.result.open")
    await page.evaluate("post()")
    await page.wait_for_function("window.result.comments.length === 1")
    assert await page.evaluate("window.result") == {
        "open": True, "comments": ["cross-origin hello"], "streamError": False, "post": 201,
    }


async def test_a_disallowed_origin_can_neither_stream_nor_post(page: Page, page_origins: list[str], api: str,
                                                               http: aiohttp.ClientSession) -> None:
    await page.goto(f"{page_origins[1]}/?api={api}")
    await page.wait_for_function("window.result.streamError")
    await page.evaluate("post()")
    assert await page.evaluate("window.result") == {"open": False, "comments": [], "streamError": True, "post": "blocked"}
    assert await all_comments(http, api, "x") == []
