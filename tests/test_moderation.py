"""Moderation over HTTP against real servers: bans, slow mode and deletes, each shared by two
writers of one database, every refusal in the JSON error shape, storing and publishing nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livecomments.tokens import mint
from tests.conftest import StartServer
from tests.fixtures.processes import sqlite_url
from tests.helpers import history, metric, post, post_reply

SECRET = "a-test-secret-of-at-least-32-bytes!"


def token(sub: str, *, moderator: bool = False) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint(SECRET, "HS256", sub=sub, name=sub.title(), moderator=moderator)}


ANA, BOB, MOD = token("ana"), token("bob"), token("mod", moderator=True)


async def call(session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str] | None = None,
               json: Any = None) -> tuple[int, Any, Any]:
    async with session.request(method, url, headers=headers or {}, json=json) as r:
        body = await r.json() if r.content_type == "application/json" else await r.read()
        return r.status, body, r.headers


@pytest.fixture
async def writers(start_server: StartServer, tmp_path: Path) -> tuple[str, str]:
    """Two writers on one database, as two processes are: what one decides, the other enforces."""
    db = sqlite_url(tmp_path / "shared.db")
    return (await start_server(storage=db, auth_jwt_secret=SECRET),
            await start_server(storage=db, auth_jwt_secret=SECRET))


async def assert_nothing_stored(session: aiohttp.ClientSession, base: str, count: int, video: str = "v") -> None:
    assert len((await history(session, base, video))["comments"]) == count


# -- bans ------------------------------------------------------------------------------------------

async def test_a_ban_refuses_the_users_posts_on_every_writer(writers: tuple[str, str],
                                                             session: aiohttp.ClientSession) -> None:
    a, b = writers
    await post(session, a, "v", headers=BOB)
    status, body, _ = await call(session, "POST", f"{a}/v1/videos/v/bans", MOD, {"user": "bob", "ttl_s": 600})
    assert status == 201 and (body["video_id"], body["user"]) == ("v", "bob"), body
    for base in (a, b):
        body = await post(session, base, "v", "still here", headers=BOB, expect=403)
        assert body["error"]["code"] == "banned", body
        assert "until 20" in body["error"]["message"]  # says when it ends
    await post(session, b, "other", headers=BOB)  # per video
    await post(session, b, "v", headers=ANA)  # per user
    await assert_nothing_stored(session, a, 2)
    assert await metric(session, a, 'livecomments_comments_rejected_total{code="banned"}') == 1
    assert (await call(session, "POST", f"{b}/v1/videos/v/bans", MOD, {"user": "bob", "ttl_s": 0}))[0] == 204  # lifted
    await post(session, a, "v", headers=BOB)


async def test_a_ban_ends_when_it_expires(writers: tuple[str, str], session: aiohttp.ClientSession) -> None:
    a, _ = writers
    assert (await call(session, "POST", f"{a}/v1/videos/v/bans", MOD, {"user": "bob", "ttl_s": 1}))[0] == 201
    await post(session, a, "v", headers=BOB, expect=403)
    # No event to await for a clock: poll, bounded, until the ban's second has passed.
    async with asyncio.timeout(5):
        while (await post_reply(session, a, "v", headers=BOB)).status == 403:
            await asyncio.sleep(0.1)


@pytest.mark.parametrize(("who", "want"), [(None, 401), (BOB, 403)])
async def test_only_moderators_ban(writers: tuple[str, str], session: aiohttp.ClientSession,
                                   who: dict[str, str] | None, want: int) -> None:
    a, _ = writers
    status, body, headers = await call(session, "POST", f"{a}/v1/videos/v/bans", who, {"user": "ana", "ttl_s": 60})
    assert status == want and body["error"]["code"] == {401: "unauthorized", 403: "forbidden"}[want], body
    await post(session, a, "v", headers=ANA)


@pytest.mark.parametrize("bad", [{"user": "", "ttl_s": 5}, {"user": "bob"}, {"user": "bob", "ttl_s": -1},
                                 {"user": "bob", "ttl_s": "5"}, {"user": 7, "ttl_s": 5}, [1]])
async def test_a_bad_ban_is_refused(writers: tuple[str, str], session: aiohttp.ClientSession, bad: Any) -> None:
    a, _ = writers
    status, body, _ = await call(session, "POST", f"{a}/v1/videos/v/bans", MOD, bad)
    assert status == 422 and set(body["error"]) == {"code", "message"}, body
    await post(session, a, "v", headers=BOB)


# -- slow mode -------------------------------------------------------------------------------------

async def test_slow_mode_allows_one_post_per_interval_across_writers(writers: tuple[str, str],
                                                                     session: aiohttp.ClientSession) -> None:
    a, b = writers
    status, body, _ = await call(session, "PUT", f"{a}/v1/videos/v/settings", MOD, {"slow_mode_s": 60})
    assert (status, body) == (200, {"video_id": "v", "slow_mode_s": 60})
    assert (await call(session, "GET", f"{b}/v1/videos/v"))[1]["slow_mode_s"] == 60
    await post(session, a, "v", headers=ANA)
    refused = await post_reply(session, b, "v", headers=ANA)
    assert refused.status == 429 and refused.body["error"]["code"] == "slow_mode", refused.body
    assert 58 <= int(refused.headers["Retry-After"]) <= 60
    await post(session, b, "v", headers=BOB)  # per user
    await post(session, b, "other", headers=ANA)  # per video
    for _ in range(3):
        await post(session, a, "v", headers=MOD)  # moderators are exempt
    await assert_nothing_stored(session, a, 5)
    assert await metric(session, b, 'livecomments_comments_rejected_total{code="slow_mode"}') == 1
    assert (await call(session, "PUT", f"{b}/v1/videos/v/settings", MOD, {"slow_mode_s": 0}))[0] == 200
    await post(session, a, "v", headers=ANA)


async def test_under_slow_mode_a_retry_still_gets_its_first_comment(writers: tuple[str, str],
                                                                    session: aiohttp.ClientSession) -> None:
    a, b = writers
    assert (await call(session, "PUT", f"{a}/v1/videos/v/settings", MOD, {"slow_mode_s": 60}))[0] == 200
    first = await post(session, a, "v", "once", None, key="k1", headers=ANA)
    retry = await post(session, b, "v", "once", None, key="k1", headers=ANA)
    assert retry["seq"] == first["seq"]
    other = await post(session, b, "v", "twice", None, key="k2", headers=ANA, expect=429)
    assert other["error"]["code"] == "slow_mode"
    await assert_nothing_stored(session, a, 1)


async def test_slow_mode_keys_anonymous_posters_by_address(start_server: StartServer,
                                                           session: aiohttp.ClientSession, tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "open.db")
    open_base = await start_server(storage=db)  # no key: posting is open
    moderated = await start_server(storage=db, auth_jwt_secret=SECRET)
    assert (await call(session, "PUT", f"{moderated}/v1/videos/v/settings", MOD, {"slow_mode_s": 60}))[0] == 200
    await post(session, open_base, "v", author="x")
    refused = await post_reply(session, open_base, "v", author="x")
    assert (refused.status, refused.body["error"]["code"]) == (429, "slow_mode") and "Retry-After" in refused.headers


@pytest.mark.parametrize(("who", "want"), [(None, 401), (BOB, 403)])
async def test_only_moderators_set_slow_mode(writers: tuple[str, str], session: aiohttp.ClientSession,
                                             who: dict[str, str] | None, want: int) -> None:
    a, _ = writers
    assert (await call(session, "PUT", f"{a}/v1/videos/v/settings", who, {"slow_mode_s": 60}))[0] == want
    assert (await call(session, "GET", f"{a}/v1/videos/v"))[1]["slow_mode_s"] == 0


@pytest.mark.parametrize("bad", [{}, {"slow_mode_s": -1}, {"slow_mode_s": 1.5}, {"slow_mode_s": True},
                                 {"slow_mode_s": 86401}])
async def test_a_bad_setting_is_refused(writers: tuple[str, str], session: aiohttp.ClientSession, bad: Any) -> None:
    a, _ = writers
    status, body, _ = await call(session, "PUT", f"{a}/v1/videos/v/settings", MOD, bad)
    assert (status, body["error"]["code"]) == (422, "invalid_slow_mode_s"), body
    assert (await call(session, "GET", f"{a}/v1/videos/v"))[1]["slow_mode_s"] == 0


async def test_moderation_needs_a_configured_key(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server()  # open posting: nobody is anybody
    for method, path, body in [("PUT", "settings", {"slow_mode_s": 5}), ("POST", "bans", {"user": "a", "ttl_s": 5}),
                               ("DELETE", "comments/1", None)]:
        status, answer, headers = await call(session, method, f"{base}/v1/videos/v/{path}", None, body)
        assert (status, answer["error"]["code"]) == (401, "unauthorized") and "WWW-Authenticate" in headers
