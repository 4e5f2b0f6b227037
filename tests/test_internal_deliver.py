"""/internal/v1/deliver on a real process: refused before the body is read, bounded, timed out,
off the public port by default (issue 11 item 1), and an O(1) replay check (issue 10 item 10)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from livecomments.strategies import signing
from livecomments.strategies.signing import PATH, SIGNATURE, TIMESTAMP, Verifier, sign, signature
from tests.fixtures.processes import free_port, serve_args
from tests.helpers import metric, post
from tests.sse import open_stream
from tests.test_edge_connections import SLACK, closed_after, connect, raw_request

SECRET = "s3cret"
RECEIVED = "livecomments_broker_messages_received_total"


def comment_body(seq: int, text: str) -> bytes:
    comment = {"video_id": "X", "seq": seq, "author": "w", "text": text, "created_at": time.time()}
    return orjson.dumps([comment])


# One process in role both, pushes signed with SECRET; each test adds its --internal-port.
DISPATCHER = serve_args(strategy="dispatcher", transport="memory://", cluster_secret=SECRET)


def head(headers: dict[str, str], length: int) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", "Host: x", "Content-Type: application/json", f"Content-Length: {length}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k != "Content-Type"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_unsigned_push_is_refused_before_its_body_is_read(spawn: Any) -> None:
    port = free_port()
    spawn(*DISPATCHER, "--internal-port", str(port))
    url = f"http://127.0.0.1:{port}"
    # a body under the cap declared, nothing sent: the answer must not wait for the body
    answer = await raw_request(url, head({}, 500_000))
    assert answer.startswith(b"HTTP/1.1 401")
    bad = {TIMESTAMP: f"{time.time():.3f}", SIGNATURE: "zz" * 32}
    answer = await raw_request(url, head(bad, 500_000))
    assert answer.startswith(b"HTTP/1.1 401") and b"malformed" in answer
    # over the cap: refused from the declared length whoever signed it
    answer = await raw_request(url, head({}, 4_000_000))
    assert answer.startswith(b"HTTP/1.1 413")


async def test_signed_push_declaring_too_big_a_body_is_413_unread(spawn: Any) -> None:
    port = free_port()
    spawn(*DISPATCHER, "--internal-port", str(port))
    answer = await raw_request(f"http://127.0.0.1:{port}", head(sign(SECRET.encode(), b"[]"), 50_000_000))
    assert answer.startswith(b"HTTP/1.1 413")


async def test_a_push_body_that_trickles_is_dropped(spawn: Any) -> None:
    port = free_port()
    spawn(*DISPATCHER, "--internal-port", str(port), "--body-timeout", "60")  # the endpoint's own timeout acts
    body = comment_body(1, "slow")
    reader, writer = await connect(f"http://127.0.0.1:{port}")
    writer.write(head(sign(SECRET.encode(), body), len(body)))
    start = time.monotonic()
    took = await closed_after(reader, writer, start, body)
    assert took < 5 + SLACK


async def test_only_signed_fresh_unseen_pushes_are_delivered(spawn: Any, session: Any) -> None:
    port = free_port()
    server = spawn(*DISPATCHER, "--internal-port", str(port))
    viewer = await open_stream(session, server.url, "X")
    url = f"http://127.0.0.1:{port}{PATH}"
    body = comment_body(1, "forged")
    old = f"{time.time() - 60:.3f}"
    refused = [
        {"Content-Type": "application/json"},
        {**sign(b"wrong secret", body)},
        {TIMESTAMP: old, SIGNATURE: signature(SECRET.encode(), old, body)},
        {TIMESTAMP: "nan", SIGNATURE: signature(SECRET.encode(), "nan", body)},
    ]
    for headers in refused:
        async with session.post(url, data=body, headers=headers) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "unauthorized"
    genuine = comment_body(1, "pushed")
    headers = sign(SECRET.encode(), genuine)
    async with session.post(url, data=genuine, headers=headers) as r:
        assert r.status == 204
    async with session.post(url, data=genuine, headers=headers) as r:  # the same request again
        assert r.status == 401
        assert "replayed" in (await r.json())["error"]["message"]
    async with session.post(url, data=comment_body(2, "tampered"), headers=headers) as r:
        assert r.status == 401
    assert await metric(session, server.url, RECEIVED) == 1  # refused requests delivered nothing
    assert (await viewer.next_comment())["text"] == "pushed"


async def test_pushes_listen_off_the_public_port_by_default(spawn: Any, redis_server: Any,
                                                            session: Any) -> None:
    realtime = spawn(*serve_args(role="realtime", strategy="dispatcher", transport=redis_server.url,
                                 cluster_secret=SECRET))
    writer = spawn(*serve_args(role="writer", strategy="dispatcher", transport=redis_server.url, cluster_secret=SECRET))
    viewer = await open_stream(session, realtime.url, "Y")  # registers the video, with the advertised URL
    client = aioredis.from_url(redis_server.url)
    try:
        members = [m.decode() for m in await client.smembers("lc:reg:v:Y")]
    finally:
        await client.aclose()
    assert len(members) == 1
    advertised = members[0].partition(" ")[2]
    assert advertised != realtime.url and advertised.startswith("http://127.0.0.1:")
    body = comment_body(1, "x")
    async with session.post(realtime.url + PATH, data=body, headers=sign(SECRET.encode(), body)) as r:
        assert r.status == 404  # not on the public port
    await post(session, writer.url, "Y", text="through the advertised port")
    assert (await viewer.next_comment())["text"] == "through the advertised port"


async def test_internal_port_refuses_parser_garbage_as_json(spawn: Any) -> None:
    port = free_port()
    spawn(*DISPATCHER, "--internal-port", str(port))
    answer = await raw_request(f"http://127.0.0.1:{port}", b"GARBAGE\r\n\r\n")
    assert b"application/json" in answer and b"GARBAGE" not in answer


def _accept(verifier: Verifier, n: int) -> float:
    secret = b"k"
    started = time.perf_counter()
    for i in range(n):
        body = b"[%d]" % i
        headers = sign(secret, body)
        assert verifier.check(headers[TIMESTAMP], headers[SIGNATURE], body) == ""
    return time.perf_counter() - started


def test_replay_check_cost_does_not_grow_with_what_is_remembered() -> None:
    """30k remembered pushes: the old check copied all of them per request (2.7 ms each)."""
    fresh = _accept(Verifier(b"k"), 2000)
    loaded = Verifier(b"k")
    _accept(loaded, 30_000)
    assert len(loaded) == 30_000
    assert _accept(loaded, 2000) < 3 * fresh + 0.05


def test_replay_memory_is_released_after_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = Verifier(b"k")
    _accept(verifier, 100)
    now = time.time()
    monkeypatch.setattr(signing.time, "time", lambda: now + 2 * signing.MAX_SKEW + 1)
    _accept(verifier, 1)
    assert len(verifier) == 1


async def test_signing_is_framework_free_and_push_does_not_import_the_handler() -> None:
    code = ("import sys, livecomments.strategies.signing; web = 'aiohttp.web' in sys.modules; "
            "import livecomments.strategies.push; print(web, 'livecomments.edge.internal' in sys.modules)")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert out.split() == [b"False", b"False"]
