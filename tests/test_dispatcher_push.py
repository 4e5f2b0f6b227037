"""The deliver endpoint's authentication, the in-process path of memory://, and --internal-port."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from livecomments.config import Config
from livecomments.internal import PATH, SIGNATURE, TIMESTAMP, sign, signature
from livecomments.metrics import Metrics
from livecomments.model import Comment
from livecomments.strategies.dispatcher import DispatcherStrategy
from tests.fixtures.processes import free_port
from tests.helpers import metric, post
from tests.sse import open_stream

SECRET = "s3cret"
RECEIVED = "livecomments_broker_messages_received_total"


def both(spawn: Any, tmp_path: Path, *extra: str) -> Any:
    return spawn("--strategy", "dispatcher", "--registry", "memory://", "--cluster-secret", SECRET,
                 "--storage", f"sqlite:///{tmp_path}/lc.db", *extra)


def comment_body(seq: int, text: str) -> bytes:
    comment = {"video_id": "X", "seq": seq, "author": "w", "text": text, "created_at": time.time()}
    return orjson.dumps([comment])


async def test_memory_registry_delivers_in_process(spawn: Any, tmp_path: Path, session: Any) -> None:
    server = both(spawn, tmp_path)
    viewer = await open_stream(session, server.url, "X")
    for text in ("a", "b"):
        await post(session, server.url, "X", text=text)
    assert [c["text"] for c in await viewer.comments(2)] == ["a", "b"]
    assert await metric(session, server.url, "livecomments_dispatch_pushes_total") == 0  # no HTTP
    assert await metric(session, server.url, RECEIVED) == 2
    assert await metric(session, server.url, "livecomments_registry_lookups_total") >= 1
    assert await metric(session, server.url, "livecomments_registry_cache_hits_total") >= 1


async def test_only_signed_fresh_unseen_pushes_are_delivered(
    spawn: Any, tmp_path: Path, session: Any
) -> None:
    server = both(spawn, tmp_path)
    viewer = await open_stream(session, server.url, "X")
    url = server.url + PATH
    body = comment_body(1, "forged")
    old = f"{time.time() - 60:.3f}"
    refused = [
        {"Content-Type": "application/json"},
        {**sign(b"wrong secret", body)},
        {TIMESTAMP: old, SIGNATURE: signature(SECRET.encode(), old, body)},
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


async def test_internal_port_serves_deliver_alone(spawn: Any, tmp_path: Path, session: Any) -> None:
    port = free_port()
    server = both(spawn, tmp_path, "--internal-port", str(port))
    body = comment_body(1, "x")
    async with session.post(server.url + PATH, data=body, headers=sign(SECRET.encode(), body)) as r:
        assert r.status == 404  # not on the public port
    internal = f"http://127.0.0.1:{port}"
    async with session.post(internal + PATH, data=body, headers={}) as r:
        assert r.status == 401
    async with session.post(internal + PATH, data=body, headers=sign(SECRET.encode(), body)) as r:
        assert r.status == 204
    viewer = await open_stream(session, server.url, "Y")
    await post(session, server.url, "Y", text="local")
    assert (await viewer.next_comment())["text"] == "local"


async def test_a_writer_with_a_stale_route_pushes_its_latest_comment_to_a_joiner() -> None:
    """The join guarantee with a real DispatcherStrategy and memory registry: a comment
    routed by the cache before the registration reached it still arrives, right after."""
    strategy = DispatcherStrategy(Config(strategy="dispatcher", registry="memory://"), Metrics())
    got: list[Comment] = []
    arrived = asyncio.Event()

    def deliver(comment: Comment) -> None:
        got.append(comment)
        arrived.set()

    await strategy.start(deliver, lambda: None)
    try:
        await strategy.publish(Comment("X", 1, "a", "cached: nobody watches", time.time()))
        await strategy.watch("X")
        await strategy.publish(Comment("X", 2, "a", "routed by the stale cache", time.time()))
        assert got == []  # the change has not reached the route yet
        async with asyncio.timeout(5):
            await arrived.wait()
        assert [c.seq for c in got] == [2]  # a hub seeing a seq jump reads what it lacks from storage
    finally:
        await strategy.close()
