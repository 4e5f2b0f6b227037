"""auth_streams: streams, history and video info need a token; ?access_token= for EventSource.
And GET /v1/videos/{id}, public or not."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import jwt
import pytest

from livecomments.logs import ACCESS_LOGGER
from tests.conftest import StartServer
from tests.helpers import post
from tests.sse import SSEReader

SECRET = "a-test-secret-of-at-least-32-bytes!"


def token(sub: str = "ana", **extra: object) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600, **extra}, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


READS = ["/v1/videos/v1/stream", "/v1/videos/v1/comments", "/v1/videos/v1"]


@pytest.mark.parametrize("path", READS)
async def test_private_reads_need_a_token(start_server: StartServer, session: aiohttp.ClientSession, path: str) -> None:
    base = await start_server(auth_jwt_secret=SECRET, auth_streams=True)
    async with session.get(base + path) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="livecomments"'
        assert (await r.json())["error"]["code"] == "unauthorized"
    if path.endswith("/stream"):
        return  # an expired token on a stream is told in band (tests/test_auth_expired_stream.py)
    async with session.get(base + path, params={"access_token": token(exp=int(time.time()) - 120)}) as r:
        assert r.status == 401
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize("path", READS)
async def test_reads_stay_public_without_auth_streams(start_server: StartServer, session: aiohttp.ClientSession,
                                                      path: str) -> None:
    base = await start_server(auth_jwt_secret=SECRET)
    async with session.get(base + path) as r:
        assert r.status == 200


async def test_eventsource_streams_with_access_token_and_the_token_is_not_logged(
    start_server: StartServer, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture,
) -> None:
    base = await start_server(auth_jwt_secret=SECRET, auth_streams=True, access_log=True)
    secret_token = token()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        async with asyncio.timeout(10):
            resp = await session.get(f"{base}/v1/videos/v1/stream", params={"access_token": secret_token})
            try:
                assert resp.status == 200
                reader = SSEReader(resp)
                assert (await reader.next()).retry is not None  # joined: what is posted now is seen
                await post(session, base, "v1", "hello", headers=bearer(token("bob", name="Bob")))
                comment = await reader.next_comment()
                assert (comment["text"], comment["author"]) == ("hello", "Bob")
            finally:
                resp.close()
        async with session.get(f"{base}/v1/videos/v1/comments", headers=bearer(secret_token)) as r:
            assert r.status == 200
            assert [c["text"] for c in (await r.json())["comments"]] == ["hello"]
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert lines, "the access log wrote nothing"
    assert all(secret_token not in str(vars(r)) for r in lines)


async def test_video_info(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server()
    async with session.get(f"{base}/v1/videos/v9") as r:
        assert await r.json() == {"video_id": "v9", "last_seq": 0, "viewers": 0, "slow_mode_s": 0}
    await post(session, base, "v9")
    await post(session, base, "v9")
    async with asyncio.timeout(10):
        resp = await session.get(f"{base}/v1/videos/v9/stream")
        try:
            assert (await SSEReader(resp).next()).retry is not None  # the viewer has joined
            async with session.get(f"{base}/v1/videos/v9") as r:
                assert await r.json() == {"video_id": "v9", "last_seq": 2, "viewers": 1, "slow_mode_s": 0}
        finally:
            resp.close()
    async with session.get(f"{base}/v1/videos/{'x' * 500}") as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_video_id"


async def test_video_info_on_a_writer_counts_from_the_broker(start_server: StartServer, session: aiohttp.ClientSession,
                                                          redis_server: object) -> None:
    base = await start_server(role="writer", broker=redis_server.url)  # type: ignore[attr-defined]
    async with session.get(f"{base}/v1/videos/v1") as r:
        assert (await r.json())["viewers"] == 0  # nobody watches: read from what Redis keeps
