"""auth_streams with an expired token: streams say `token_expired` in band (an EventSource never
retries a 401), history and posts answer 401 `token_expired`; every other bad token stays a 401.
One real server process for the module."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import jwt
import pytest

from livecomments.edge.ws import CLOSE_TOKEN_EXPIRED
from tests.fixtures.processes import LivecommentsProcess, Spawn
from tests.helpers import post, post_reply
from tests.sse import open_stream
from tests.ws import open_ws

SECRET = "expired-stream-secret-of-32-bytes!!"
AUDIENCE = "livecomments"
LEEWAY = 1  # seconds: a token minted to expire soon expires soon
EXPIRED_FRAME_START = b'event: error\ndata: {"error":{"code":"token_expired","message":'


def token(sub: str = "ana", ttl: float = 600, secret: str = SECRET, **extra: object) -> str:
    claims = {"sub": sub, "exp": int(time.time() + ttl), "aud": AUDIENCE, **extra}
    return jwt.encode(claims, secret, algorithm="HS256")


EXPIRED = token(ttl=-120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivecommentsProcess]:
    spawner = Spawn(tmp_path_factory.mktemp("expired"))
    try:
        yield spawner("--auth-jwt-secret", SECRET, "--auth-streams", "--auth-jwt-leeway", str(LEEWAY),
                      "--auth-jwt-audience", AUDIENCE)
    finally:
        spawner.stop_all()


async def test_sse_with_an_expired_token_gets_200_and_one_token_expired_event(
    server: LivecommentsProcess, session: aiohttp.ClientSession,
) -> None:
    for headers, params in (({}, {"access_token": EXPIRED}), ({"Authorization": f"Bearer {EXPIRED}"}, {})):
        async with asyncio.timeout(10):
            async with session.get(f"{server.url}/v1/videos/v1/stream", params=params, headers=headers) as r:
                body = await r.read()  # the whole answer: the stream ends after the one frame
        assert r.status == 200 and r.content_type == "text/event-stream"
        assert body.startswith(EXPIRED_FRAME_START) and body.endswith(b"}}\n\n"), body
        assert body.count(b"\n\n") == 1  # exactly one frame: no retry:, no comment, no heartbeat
        assert b"Signature" not in body  # our words, not PyJWT's


@pytest.mark.parametrize("bad, message", [
    (token(secret="another-secret-of-at-least-32-bytes"), "the token's signature does not verify"),
    ("eyJhbGciOiJIUzI1NiJ9.e30.AAAA=", "the token is malformed"),  # PyJWT: "Invalid header padding" or alike
    (token(aud="someone-else"), "the token is meant for another audience (aud)"),
    (token(ttl=-120, secret="another-secret-of-at-least-32-bytes"), "the token's signature does not verify"),
    (token(ttl=-120, aud="someone-else"), "the token is meant for another audience (aud)"),
], ids=["forged", "malformed", "wrong aud", "expired and forged", "expired and wrong aud"])
async def test_any_other_bad_token_on_a_stream_is_still_a_401(
    server: LivecommentsProcess, session: aiohttp.ClientSession, bad: str, message: str,
) -> None:
    """Only a token that verifies, apart from its age, is `token_expired`: a forged old token is a forgery."""
    async with session.get(f"{server.url}/v1/videos/v1/stream", params={"access_token": bad}) as r:
        assert r.status == 401
        assert (await r.json())["error"] == {"code": "unauthorized", "message": message}
        assert r.headers["WWW-Authenticate"].startswith('Bearer realm="livecomments", error="invalid_token"')


async def test_history_and_posts_with_an_expired_token_are_401_token_expired(
    server: LivecommentsProcess, session: aiohttp.ClientSession,
) -> None:
    async with session.get(f"{server.url}/v1/videos/h1/comments", params={"access_token": EXPIRED}) as r:
        assert r.status == 401
        assert (await r.json())["error"] == {"code": "token_expired", "message": "the token has expired"}
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    reply = await post_reply(session, server.url, "h1", token=EXPIRED)
    assert (reply.status, reply.body["error"]["code"]) == (401, "token_expired")
    async with session.get(f"{server.url}/v1/videos/h1/comments", params={"access_token": token()}) as r:
        assert (await r.json())["comments"] == []  # the refused post stored nothing


async def test_websocket_with_an_expired_token_is_told_in_band_and_closed_4001(
    server: LivecommentsProcess, session: aiohttp.ClientSession,
) -> None:
    async with asyncio.timeout(10):
        async with session.ws_connect(f"{server.url}/v1/videos/w1/ws", params={"access_token": EXPIRED}) as ws:
            first = await ws.receive()
            assert first.type is aiohttp.WSMsgType.TEXT
            assert first.json() == {"type": "error", "error": {"code": "token_expired", "message": "the token has expired"}}
            closing = await ws.receive()
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == CLOSE_TOKEN_EXPIRED


async def test_websocket_with_a_forged_token_is_refused_before_the_upgrade(
    server: LivecommentsProcess, session: aiohttp.ClientSession,
) -> None:
    bad = token(secret="another-secret-of-at-least-32-bytes")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with asyncio.timeout(10):
            await session.ws_connect(f"{server.url}/v1/videos/w1/ws", params={"access_token": bad})
    assert refused.value.status == 401


async def test_an_open_stream_outlives_its_token_but_socket_posts_need_a_fresh_one(
    server: LivecommentsProcess, session: aiohttp.ClientSession,
) -> None:
    """The decision (docs/identity.md): a token is checked when a stream opens, so an open stream
    goes on past its exp; what the socket posts is checked against the token's exp every time."""
    short = token(ttl=1)
    sse = await open_stream(session, server.url, "o1", headers={"Authorization": f"Bearer {short}"})
    ws = await open_ws(session, server.url, "o1", access_token=short)
    exp = jwt.decode(short, options={"verify_signature": False, "verify_aud": False})["exp"]
    await asyncio.sleep(max(0.0, exp + LEEWAY - time.time()) + 0.1)  # the expiry itself is under test: a clock
    stale = await ws.post("after exp", id="p1")
    assert stale["type"] == "error" and stale["error"]["code"] == "token_expired"
    await post(session, server.url, "o1", "still live", token=token())
    assert (await sse.next_comment())["text"] == "still live"
    assert (await ws.next_of("comment"))["text"] == "still live"
    await ws.send({"type": "auth", "token": token("bob")})
    assert (await ws.post("refreshed", id="p2"))["type"] == "ack"
