"""The demo page in real headless Chromium against a real `livecomments serve`."""

from __future__ import annotations

import signal
from collections.abc import Callable

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from livecomments.edge.demo import CLIENT_PATH, CSP, DEMO_FILES
from livecomments.tokens import mint
from tests.fixtures.browser import shown_seqs
from tests.fixtures.processes import Spawn
from tests.helpers import all_comments, post

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "a-demo-secret-that-is-at-least-32-bytes-long"


@pytest.fixture
def serve(spawn: Spawn) -> Callable[..., str]:
    """serve(**env) -> base URL of a real server; rate limits off unless env sets them."""

    def start(**env: str) -> str:
        env = {"LIVECOMMENTS_RATE_LIMIT_PER_S": "0", **env}
        return spawn(env=env).url

    return start


async def open_video(page: Page, base: str, video: str) -> None:
    await page.goto(f"{base}/demo/?video={video}")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")


async def second_post_is_held(page: Page, user: str, refusal: str) -> None:
    """Post "one" then "two" as `user` (a token signed with SECRET): the first shows, the second
    is refused inline with `refusal` and the send button is held."""
    await page.fill("#token-input", mint(SECRET, "HS256", sub=user))
    await page.fill("#text-input", "one")
    await page.click("#send")
    await expect(page.locator("#comments .text")).to_have_text(["one"])
    await page.fill("#text-input", "two")
    await page.click("#send")
    await expect(page.locator("#post-error")).to_contain_text(refusal)
    await expect(page.locator("#send")).to_be_disabled()


async def test_a_comment_posted_by_another_client_shows_live(page: Page, http: aiohttp.ClientSession,
                                                             serve: Callable[..., str]) -> None:
    base = serve()
    await post(http, base, "v1", "before the page opened", author="early")
    await open_video(page, base, "v1")
    await expect(page.locator("#comments .text")).to_have_text(["before the page opened"])
    markup = '<img src=x onerror="document.title=1"> & <b>bold</b>'
    await post(http, base, "v1", markup, author="<i>curl</i>")
    # shown as typed, never as markup
    await expect(page.locator("#comments .text")).to_have_text(["before the page opened", markup])
    await expect(page.locator("#comments .author")).to_have_text(["early", "<i>curl</i>"])
    assert await page.locator("#comments img, #comments b, #comments i").count() == 0


async def test_posting_through_the_form_stores_one_comment(page: Page, http: aiohttp.ClientSession,
                                                           serve: Callable[..., str]) -> None:
    base = serve()
    await open_video(page, base, "form")
    await page.fill("#name-input", "Ana")
    await page.fill("#text-input", "hello from the form")
    await page.click("#send")
    await expect(page.locator("#comments .text")).to_have_text(["hello from the form"])
    await expect(page.locator("#text-input")).to_have_value("")
    stored = await all_comments(http, base, "form")
    assert [(c["author"], c["text"]) for c in stored] == [("Ana", "hello from the form")]
    await post(http, base, "form", "and one from elsewhere")  # the stream's copy of ours is not shown twice
    await expect(page.locator("#comments .text")).to_have_text(["hello from the form", "and one from elsewhere"])


async def test_load_earlier_pages_by_cursor(page: Page, http: aiohttp.ClientSession, serve: Callable[..., str]) -> None:
    base = serve()
    for n in range(1, 61):
        await post(http, base, "long", f"comment {n}")
    await open_video(page, base, "long")
    assert await shown_seqs(page) == list(range(11, 61))  # the newest page of 50
    await page.click("#load-earlier")
    await expect(page.locator("#comments > li")).to_have_count(60)
    assert await shown_seqs(page) == list(range(1, 61))
    await expect(page.locator("#load-earlier")).to_be_hidden()
    await expect(page.locator("#history-note")).to_contain_text("beginning")


async def test_a_too_long_text_is_refused_inline_and_stores_nothing(page: Page, http: aiohttp.ClientSession,
                                                                    serve: Callable[..., str]) -> None:
    base = serve(LIVECOMMENTS_MAX_TEXT="20")
    await open_video(page, base, "short")
    await page.fill("#text-input", "x" * 21)
    await expect(page.locator("#counter")).to_have_text("21 / 20")
    await page.click("#send")
    await expect(page.locator("#post-error")).to_contain_text("max 20")
    await expect(page.locator("#text-input")).to_have_value("x" * 21)  # kept, to be shortened
    assert await all_comments(http, base, "short") == []
    assert await page.locator("#comments > li").count() == 0


async def test_rate_limited_shows_retry_after_and_holds_the_button(page: Page, serve: Callable[..., str]) -> None:
    # per user: anonymous posts from loopback are not limited, so post with a token
    base = serve(LIVECOMMENTS_RATE_LIMIT_PER_S="0.05", LIVECOMMENTS_RATE_LIMIT_BURST="1", LIVECOMMENTS_AUTH_JWT_SECRET=SECRET)
    await open_video(page, base, "fast")
    await second_post_is_held(page, "bo", "posting too fast. Try again in")


async def test_with_auth_the_page_asks_for_a_token_and_posts_as_its_name(page: Page, serve: Callable[..., str]) -> None:
    base = serve(LIVECOMMENTS_AUTH_JWT_SECRET=SECRET)
    await open_video(page, base, "auth")
    await expect(page.locator("#token-row")).to_be_visible()
    await expect(page.locator("#name-row")).to_be_hidden()
    await page.fill("#text-input", "no token")
    await page.click("#send")
    await expect(page.locator("#post-error")).to_contain_text("Your token was not accepted")
    await page.fill("#token-input", mint(SECRET, "HS256", sub="ana", name="Ana Lima"))
    await page.fill("#text-input", "with a token")
    await page.click("#send")
    await expect(page.locator("#comments .author")).to_have_text(["Ana Lima"])
    await expect(page.locator("#post-error")).to_be_hidden()


async def test_demo_routes_redirect_and_carry_a_strict_csp(http: aiohttp.ClientSession, serve: Callable[..., str]) -> None:
    base = serve(LIVECOMMENTS_MAX_TEXT="300")
    for path, location in [("/", "/demo/"), ("/demo", "/demo/"), ("/?video=abc", "/demo/?video=abc")]:
        async with http.get(base + path, allow_redirects=False) as response:
            assert (response.status, response.headers["Location"]) == (302, location)
    files = [("/demo/" if name == "index.html" else f"/demo/{name}", content_type) for name, content_type in DEMO_FILES.items()]
    files.append((CLIENT_PATH, "text/javascript"))  # the client library, with the same strict headers
    for path, content_type in [*files, ("/demo/config.json", "application/json")]:
        async with http.get(base + path) as response:
            assert response.status == 200
            assert response.content_type == content_type
            assert response.headers["Content-Security-Policy"] == CSP
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    async with http.get(base + "/demo/config.json") as response:
        config = await response.json()
    assert config == {"auth": False, "auth_streams": False, "max_text": 300, "max_author": 64, "page_limit": 50}


async def test_a_moderator_deletes_and_every_viewer_drops_the_comment(page: Page, browser: Browser,
                                                                     http: aiohttp.ClientSession,
                                                                     serve: Callable[..., str]) -> None:
    base = serve(LIVECOMMENTS_AUTH_JWT_SECRET=SECRET)
    poster = mint(SECRET, "HS256", sub="cy")
    for text in ("keep me", "spam", "keep me too"):
        await post(http, base, "mod", text, token=poster)
    viewer_context = await browser.new_context()
    try:
        viewer = await viewer_context.new_page()
        await open_video(viewer, base, "mod")
        await expect(viewer.locator("#comments .delete").first).to_be_hidden()  # not a moderator
        await open_video(page, base, "mod")
        await page.fill("#token-input", mint(SECRET, "HS256", sub="mia", moderator=True))
        spam = page.locator("#comments > li", has_text="spam")
        await spam.hover()
        await spam.locator(".delete").click()  # asks first: a slipped click deletes nothing
        await expect(spam.locator(".delete")).to_have_text("Really delete?")
        assert len(await all_comments(http, base, "mod")) == 3
        await spam.locator(".delete").click()
        for shown in (page, viewer):
            await expect(shown.locator("#comments .text")).to_have_text(["keep me", "keep me too"])
        assert [c["text"] for c in await all_comments(http, base, "mod")] == ["keep me", "keep me too"]
        await post(http, base, "mod", "after the delete", token=poster)  # the stream goes on past it
        await expect(viewer.locator("#comments .text")).to_have_text(["keep me", "keep me too", "after the delete"])
    finally:
        await viewer_context.close()


async def test_slow_mode_and_bans_are_explained_inline(page: Page, http: aiohttp.ClientSession,
                                                      serve: Callable[..., str]) -> None:
    base = serve(LIVECOMMENTS_AUTH_JWT_SECRET=SECRET)
    moderator = {"Authorization": f"Bearer {mint(SECRET, 'HS256', sub='mia', moderator=True)}"}
    async with http.put(f"{base}/v1/videos/slow/settings", json={"slow_mode_s": 60}, headers=moderator) as response:
        assert response.status == 200
    await open_video(page, base, "slow")
    await second_post_is_held(page, "dan", "Slow mode is on for this video. Try again in")
    await expect(page.locator("#text-input")).to_have_value("two")
    async with http.post(f"{base}/v1/videos/slow/bans", json={"user": "ed", "ttl_s": 60}, headers=moderator) as response:
        assert response.status == 201
    await page.fill("#token-input", mint(SECRET, "HS256", sub="ed"))  # another user: not held by dan's wait
    await page.click("#send")
    await expect(page.locator("#post-error")).to_have_text("You are banned from commenting on this video.")
    assert [c["text"] for c in await all_comments(http, base, "slow")] == ["one"]


async def test_scrolled_up_reader_gets_a_new_marker_instead_of_a_jump(page: Page, http: aiohttp.ClientSession,
                                                                      serve: Callable[..., str]) -> None:
    base = serve()
    for n in range(1, 31):
        await post(http, base, "busy", f"comment {n}")
    await open_video(page, base, "busy")
    scroller = page.locator("#scroller")
    await scroller.evaluate("s => { s.scrollTop = 0; }")
    for n in (31, 32):
        await post(http, base, "busy", f"comment {n}")
    await expect(page.locator("#new-marker")).to_have_text("2 new comments ↓")
    assert await scroller.evaluate("s => s.scrollTop") == 0  # the reader stays where they were
    await page.click("#new-marker")
    await expect(page.locator("#new-marker")).to_be_hidden()
    assert await scroller.evaluate("s => s.scrollHeight - s.scrollTop - s.clientHeight < 2")
    await post(http, base, "busy", "comment 33")  # at the bottom: followed, no marker
    await expect(page.locator("#comments .text").last).to_have_text("comment 33")
    await expect(page.locator("#comments .text").last).to_be_in_viewport()
    await expect(page.locator("#new-marker")).to_be_hidden()


async def test_auth_streams_page_opens_the_video_once_a_token_is_given(page: Page, http: aiohttp.ClientSession,
                                                                       serve: Callable[..., str]) -> None:
    base = serve(LIVECOMMENTS_AUTH_JWT_SECRET=SECRET, LIVECOMMENTS_AUTH_STREAMS="true")
    token = mint(SECRET, "HS256", sub="fay", name="Fay")
    await post(http, base, "members", "members only", token=token)
    await page.goto(f"{base}/demo/?video=members")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "error")
    await expect(page.locator("#conn")).to_contain_text("Could not load comments")
    await page.fill("#token-input", token)
    await page.press("#token-input", "Enter")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(page.locator("#comments .text")).to_have_text(["members only"])
    await post(http, base, "members", "streamed with ?access_token=", token=token)
    await expect(page.locator("#comments .text")).to_have_text(["members only", "streamed with ?access_token="])


@pytest.mark.parametrize("width", [360, 390, 768, 1280])
async def test_readable_at_phone_and_desktop_widths(browser: Browser, http: aiohttp.ClientSession,
                                                    serve: Callable[..., str], width: int) -> None:
    base = serve()
    await post(http, base, "w", "a-very-long-word-" * 12, author="someone-with-a-rather-long-name-indeed")
    context = await browser.new_context(viewport={"width": width, "height": 800})
    try:
        page = await context.new_page()
        await open_video(page, base, "w")
        # nothing wider than the screen: no sideways scrolling on a phone
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        for selector in ("#text-input", "#send", "#comments .text", "#conn"):
            await expect(page.locator(selector)).to_be_in_viewport()
    finally:
        await context.close()


async def test_the_viewer_count_counts_the_pages_watching(page: Page, browser: Browser,
                                                          serve: Callable[..., str]) -> None:
    base = serve(LIVECOMMENTS_VIEWERS_INTERVAL="0.2")
    await open_video(page, base, "count")
    await expect(page.locator("#viewers")).to_have_text("1 watching")
    second_context = await browser.new_context()
    try:
        second = await second_context.new_page()
        await open_video(second, base, "count")
        await expect(second.locator("#viewers")).to_have_text("2 watching")
        await expect(page.locator("#viewers")).to_have_text("2 watching")  # told by `event: viewers`
    finally:
        await second_context.close()
    await expect(page.locator("#viewers")).to_have_text("1 watching")  # and back when it closes


async def test_a_refused_stream_says_why(page: Page, browser: Browser, serve: Callable[..., str]) -> None:
    """`event: error` (the server is full): the reason stays on screen while the browser waits out the
    server's long `retry:` (20-40 s, so refused viewers do not return in one wave)."""
    base = serve(LIVECOMMENTS_MAX_STREAMS="1")
    first_context = await browser.new_context()
    try:
        first = await first_context.new_page()
        await open_video(first, base, "full")  # takes the only stream
        await page.goto(f"{base}/demo/?video=full")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "error")
        await expect(page.locator("#conn")).to_have_text("Stream refused: this server holds its maximum of 1 streams")
    finally:
        await first_context.close()


async def test_with_the_server_down_the_page_shows_it_and_drops_the_count(page: Page, spawn: Spawn) -> None:
    server = spawn()
    await open_video(page, server.url, "down")
    await expect(page.locator("#viewers")).to_have_text("1 watching")
    await expect(page.locator("#live-badge")).to_be_visible()
    server.stop(signal.SIGTERM)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    await expect(page.locator("#conn")).to_contain_text("Reconnecting")
    # neither "LIVE" nor a count that nobody is keeping any more
    await expect(page.locator("#live-badge")).to_be_hidden()
    await expect(page.locator("#viewers")).to_be_hidden()


async def test_a_bad_video_id_is_explained_by_the_input_and_kept(page: Page, serve: Callable[..., str]) -> None:
    base = serve()
    failed: list[str] = []
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    await page.goto(f"{base}/demo/?video=bad%20id!")
    await expect(page.locator("#video-error")).to_have_text("A video id is 1-64 letters, digits, _ or -")
    await expect(page.locator("#video-input")).to_have_value("bad id!")  # what was asked for, to be corrected
    await expect(page.locator("#conn")).to_have_attribute("data-state", "idle")  # the pill is about the stream
    # typed into the form while a video plays: the error by the input, and the video goes on
    await page.fill("#video-input", "ok")
    await page.click("#picker button")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(page.locator("#video-error")).to_be_hidden()
    await page.fill("#video-input", "no/slashes")
    await page.click("#picker button")
    await expect(page.locator("#video-error")).to_be_visible()
    await expect(page.locator("#video-input")).to_have_value("no/slashes")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    # the icon is inline: no request for /favicon.ico, and nothing else failed either
    assert (await page.get_attribute("link[rel=icon]", "href") or "").startswith("data:image/svg+xml,")
    assert failed == []


async def test_the_page_streams_and_posts_over_a_websocket(page: Page, http: aiohttp.ClientSession,
                                                          serve: Callable[..., str]) -> None:
    base = serve()
    await post(http, base, "wsd", "before", author="early")
    sockets: list[str] = []
    posts: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    await page.goto(f"{base}/demo/?video=wsd&transport=ws")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(page.locator("#comments .text")).to_have_text(["before"])
    assert sockets == [base.replace("http", "ws", 1) + "/v1/videos/wsd/ws?since=1"]
    await post(http, base, "wsd", "over http")
    await expect(page.locator("#comments .text")).to_have_text(["before", "over http"])
    await page.fill("#name-input", "Ana")
    await page.fill("#text-input", "over the socket")
    await page.click("#send")
    await expect(page.locator("#comments .text")).to_have_text(["before", "over http", "over the socket"])
    await expect(page.locator("#text-input")).to_have_value("")
    assert posts == []  # the post went over the socket, not as a POST
    stored = await all_comments(http, base, "wsd")
    assert [(c["author"], c["text"]) for c in stored] == [("early", "before"), ("ana", "over http"), ("Ana", "over the socket")]
