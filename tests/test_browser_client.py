"""livecomments.js (/client/livecomments.js) in real headless Chromium against a real `livecomments serve`.

A page on the server's origin imports the module and records what its handlers are told in
`window.got`; the test posts, stops and restarts the server and reads `got` back. Two servers for
the whole module (an open one, and one with tokens and private streams), one browser.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, Route, expect

from livecomments.tokens import mint
from tests.fixtures.processes import LivecommentsProcess, free_port, sqlite_url
from tests.helpers import all_comments, history, post

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "a-client-secret-that-is-at-least-32-bytes-long"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "client.md"

# Imports the module and subscribes; handlers record into window.got. `tokens`: what getToken()
# answers, one per call (the last one again once they run out); window.tokenCalls counts the calls.
SUBSCRIBE = """async ([video, options, tokens]) => {
  window.lc = await import("/client/livecomments.js");
  window.got = {comments: [], deletes: [], viewers: [], states: [], errors: [], resets: []};
  window.tokenCalls = 0;
  const getToken = tokens && (() => tokens[Math.min(window.tokenCalls++, tokens.length - 1)]);
  window.sub = lc.subscribe(video, {
    comment: (c) => got.comments.push(c), delete: (d) => got.deletes.push(d),
    viewers: (v) => got.viewers.push(v.viewers), state: (s) => got.states.push(s),
    error: (e) => got.errors.push(e), reset: (r) => got.resets.push(r),
  }, {...options, ...(getToken ? {getToken} : {})});
}"""


class Server:
    """A `livecomments serve` on a fixed port and SQLite file, so a restart is the same server."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.args = ["--port", str(free_port()), "--storage", sqlite_url(workdir / "client.db")]
        self.workdir, self.env, self.runs = workdir, env, 0
        self.proc = self.start()

    def start(self) -> LivecommentsProcess:
        self.runs += 1
        self.proc = LivecommentsProcess(self.args, self.workdir / f"lc-{self.runs}.log", self.env).start()
        return self.proc

    @property
    def url(self) -> str:
        return self.proc.url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # retry: 500 ms: EventSource's own retry after the restart fails sooner, and the test is shorter
    running = Server(tmp_path_factory.mktemp("client"), {"LIVECOMMENTS_VIEWERS_INTERVAL": "0.2", "LIVECOMMENTS_RETRY_MS": "500"})
    yield running
    running.proc.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Tokens on, streams private, no leeway: a token minted for 2 s is expired 2 s later."""
    env = {"LIVECOMMENTS_AUTH_JWT_SECRET": SECRET, "LIVECOMMENTS_AUTH_STREAMS": "true",
           "LIVECOMMENTS_AUTH_JWT_LEEWAY": "0"}
    running = Server(tmp_path_factory.mktemp("private"), env)
    yield running
    running.proc.stop(signal.SIGKILL)


async def subscribe(page: Page, base: str, video: str, tokens: list[str] | None = None, **options: Any) -> None:
    await page.goto(f"{base}/healthz")  # any page of the server's origin: the module is same-origin
    await page.evaluate(SUBSCRIBE, [video, options, tokens])
    await page.wait_for_function("got.states.at(-1) === 'live'")


async def got(page: Page, what: str) -> Any:
    return await page.evaluate(f"got.{what}")


async def wait_seqs(page: Page, seqs: list[int]) -> None:
    """Waits until the handler has seen at least len(seqs) comments, then checks they are exactly seqs."""
    await page.wait_for_function(f"got.comments.length >= {len(seqs)}")
    assert [c["seq"] for c in await got(page, "comments")] == seqs


async def test_sse_receives_comments_posted_over_http(page: Page, http: aiohttp.ClientSession, server: Server) -> None:
    await post(http, server.url, "sse", "before")
    await subscribe(page, server.url, "sse", since=0)
    await post(http, server.url, "sse", "<b>live</b>")
    await wait_seqs(page, [1, 2])
    assert [c["text"] for c in await got(page, "comments")] == ["before", "<b>live</b>"]
    await page.wait_for_function("got.viewers.length > 0")
    assert await got(page, "viewers") == [1]
    await page.evaluate("sub.close()")
    assert await got(page, "states") == ["connecting", "live"]


async def test_history_pages_to_the_first_comment(page: Page, http: aiohttp.ClientSession, server: Server) -> None:
    for n in range(1, 6):
        await post(http, server.url, "pages", f"c{n}")
    await page.goto(f"{server.url}/healthz")
    pages = await page.evaluate("""async () => {
      const lc = await import("/client/livecomments.js");
      const pages = [];
      let cursor = null;
      do {
        const page = await lc.history("pages", {limit: 2, cursor});
        pages.push(page.comments.map((c) => c.seq));
        cursor = page.next;
      } while (cursor);
      return pages;
    }""")
    assert pages == [[5, 4], [3, 2], [1]]


async def test_a_post_retried_with_its_key_is_stored_once(page: Page, http: aiohttp.ClientSession, server: Server) -> None:
    """The first attempt is stored but its answer is lost; the second meets a 503 with Retry-After;
    the third gets through: one comment, and every attempt carried the same Idempotency-Key."""
    keys: list[str] = []
    sent: list[float] = []

    async def flaky(route: Route) -> None:
        keys.append(route.request.headers["idempotency-key"])
        sent.append(time.monotonic())
        if len(keys) == 1:
            await route.fetch()  # reaches the server: stored
            await route.abort("connectionreset")  # and the answer never arrives
        elif len(keys) == 2:
            await route.fulfill(status=503, headers={"Retry-After": "1"}, content_type="application/json",
                                body='{"error": {"code": "overloaded", "message": "busy"}}')
        else:
            await route.continue_()

    await page.goto(f"{server.url}/healthz")
    await page.route(re.compile(r".*/v1/videos/idem/comments$"), flaky)
    comment = await page.evaluate("""async () => {
      const lc = await import("/client/livecomments.js");
      return lc.post("idem", {text: "only once", author: "ana"});
    }""")
    assert len(keys) == 3 and len(set(keys)) == 1
    assert sent[2] - sent[1] >= 1.0  # Retry-After was waited out
    stored = await all_comments(http, server.url, "idem")
    assert [(c["seq"], c["text"]) for c in stored] == [(comment["seq"], "only once")]
    refusal = await page.evaluate("""async () => {
      const lc = await import("/client/livecomments.js");
      try { await lc.post("idem", {text: "   ", author: "ana"}); return null; }
      catch (e) { return [e instanceof lc.LivecommentsError, e.code, e.status]; }
    }""")
    assert refusal == [True, "text_empty", 422]
    assert len(await all_comments(http, server.url, "idem")) == 1


async def test_ws_transport_receives_and_posts(page: Page, http: aiohttp.ClientSession, server: Server) -> None:
    await post(http, server.url, "ws", "before")
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await subscribe(page, server.url, "ws", transport="ws", since=0)
    assert sockets == [f"{server.url.replace('http', 'ws', 1)}/v1/videos/ws/ws?since=0"]
    await post(http, server.url, "ws", "over http")
    ack = await page.evaluate("sub.post({text: 'over the socket', author: 'bo'})")
    assert ack["seq"] == 3
    await wait_seqs(page, [1, 2, 3])
    assert [c["text"] for c in await got(page, "comments")] == ["before", "over http", "over the socket"]
    refusal = await page.evaluate("sub.post({text: 'x'.repeat(2001), author: 'bo'}).catch((e) => e.code)")
    assert refusal == "text_too_long"
    assert [c["text"] for c in await all_comments(http, server.url, "ws")] == ["before", "over http", "over the socket"]
    await page.evaluate("sub.close()")


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_an_expired_token_is_refreshed_and_deletes_arrive(page: Page, http: aiohttp.ClientSession,
                                                                private: Server, transport: str) -> None:
    """Streams are private and the first getToken() answer has expired: the server says
    `token_expired` in band (SSE: `event: error`; WebSocket: an error message, then close 4001),
    the client asks getToken() again, and resumes from its last seq with the fresh token, without
    reporting it as a refusal. A moderator's delete then arrives as a delete of the right seq."""
    video = f"priv-{transport}"
    poster = mint(SECRET, "HS256", sub="cy")
    for text in ("keep", "spam"):
        await post(http, private.url, video, text, token=poster)
    expired = mint(SECRET, "HS256", sub="vi", ttl=-60)
    await subscribe(page, private.url, video, [expired, mint(SECRET, "HS256", sub="vi")], since=0, transport=transport)
    await wait_seqs(page, [1, 2])
    assert await page.evaluate("window.tokenCalls") == 2
    assert await got(page, "errors") == []
    moderator = {"Authorization": f"Bearer {mint(SECRET, 'HS256', sub='mia', moderator=True)}"}
    async with http.delete(f"{private.url}/v1/videos/{video}/comments/2", headers=moderator) as response:
        assert response.status == 204
    await page.wait_for_function("got.deletes.length === 1")
    assert await got(page, "deletes") == [{"video_id": video, "seq": 2}]
    await post(http, private.url, video, "after", token=poster)  # the delete entry was seq 3: the stream goes on
    await wait_seqs(page, [1, 2, 4])
    await page.evaluate("sub.close()")


async def test_resumes_after_a_restart_with_no_gap_or_duplicate(page: Page, http: aiohttp.ClientSession,
                                                                server: Server) -> None:
    await post(http, server.url, "restart", "1")
    await subscribe(page, server.url, "restart", since=0, offlineAfter=1)
    await wait_seqs(page, [1])
    server.proc.stop(signal.SIGTERM)
    # the stream ends; EventSource's own retry fails too: the client's backoff takes over, "offline"
    await page.wait_for_function("got.states.includes('offline')")
    server.start()  # same port, same SQLite file
    for n in (2, 3):  # posted while the client is still away: caught up on resume
        await post(http, server.url, "restart", str(n))
    await page.wait_for_function("got.states.at(-1) === 'live'", timeout=15000)
    await post(http, server.url, "restart", "4")
    await wait_seqs(page, [1, 2, 3, 4])
    states = await got(page, "states")
    assert states[:3] == ["connecting", "live", "reconnecting"] and states[-1] == "live"
    assert set(states) == {"connecting", "live", "reconnecting", "offline"}
    assert [c["seq"] for c in (await history(http, server.url, "restart"))["comments"]] == [4, 3, 2, 1]


async def test_the_documented_example_runs_as_written(page: Page, http: aiohttp.ClientSession, server: Server) -> None:
    """docs/client.md's example page, served as is on the server's origin: it shows a comment
    posted elsewhere and posts through its form."""
    example = re.search(r"```html\n(.*?)```", DOCS.read_text(), re.S)
    assert example is not None, "docs/client.md has no ```html example"

    async def serve_example(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html", body=example.group(1))

    await page.route(re.compile(r".*/example\.html(\?.*)?$"), serve_example)
    await page.goto(f"{server.url}/example.html?video=docs")
    await expect(page.locator("#state")).to_have_text("live")
    await post(http, server.url, "docs", "from curl", author="cu")
    await expect(page.locator("#comments li")).to_have_text(["cu: from curl"])
    await page.fill("#text", "from the example")
    await page.click("#send")
    await expect(page.locator("#comments li")).to_have_text(["cu: from curl", "guest: from the example"])
    assert [c["text"] for c in await all_comments(http, server.url, "docs")] == ["from curl", "from the example"]
