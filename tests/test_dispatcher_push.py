"""The deliver endpoint's authentication, the in-process path of memory://, and --internal-port."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from livecomments.backends import open_registry, open_strategy
from livecomments.config import Config
from livecomments.metrics import Metrics
from livecomments.model import Comment
from livecomments.strategies.signing import PATH, sign
from tests.fixtures.processes import free_port, serve_args
from tests.helpers import metric, post, until_metric
from tests.sse import open_stream

SECRET = "s3cret"
RECEIVED = "livecomments_broker_messages_received_total"


# One process in role both on the memory registry, pushes signed with SECRET.
DISPATCHER = serve_args(strategy="dispatcher", transport="memory://", cluster_secret=SECRET)


def comment_body(seq: int, text: str) -> bytes:
    comment = {"video_id": "X", "seq": seq, "author": "w", "text": text, "created_at": time.time()}
    return orjson.dumps([comment])


async def test_memory_registry_delivers_in_process(spawn: Any, session: Any) -> None:
    server = spawn(*DISPATCHER)
    viewer = await open_stream(session, server.url, "X")
    for text in ("a", "b"):
        await post(session, server.url, "X", text=text)
    assert [c["text"] for c in await viewer.comments(2)] == ["a", "b"]
    assert await metric(session, server.url, "livecomments_dispatch_pushes_total") == 0  # no HTTP
    assert await metric(session, server.url, RECEIVED) == 2
    assert await metric(session, server.url, "livecomments_registry_lookups_total") >= 1
    assert await metric(session, server.url, "livecomments_registry_cache_hits_total") >= 1


async def test_internal_port_serves_deliver_alone(spawn: Any, session: Any) -> None:
    port = free_port()
    server = spawn(*DISPATCHER, "--internal-port", str(port))
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
    strategy = open_strategy(Config(strategy="dispatcher", registry="memory://"), Metrics())
    got: list[Comment] = []
    arrived = asyncio.Event()

    def deliver(comment: Comment) -> None:
        got.append(comment)
        arrived.set()

    await strategy.start(deliver, lambda: None)
    try:
        await strategy.publish(Comment("X", 1, "a", "cached: nobody watches", time.time()))
        loader = strategy._routes["X"].loader  # publish does not wait for the first lookup; the test does
        assert loader is not None
        await loader
        await strategy.watch("X")
        await strategy.publish(Comment("X", 2, "a", "routed by the stale cache", time.time()))
        assert got == []  # the change has not reached the route yet
        async with asyncio.timeout(5):
            await arrived.wait()
        assert [c.seq for c in got] == [2]  # a hub seeing a seq jump reads what it lacks from storage
    finally:
        await strategy.close()


async def test_a_push_failing_unexpectedly_is_counted_and_the_pusher_goes_on(
    spawn: Any, redis_server: Any, session: Any,
) -> None:
    """A server advertising a URL aiohttp cannot even encode (an empty DNS label: UnicodeError,
    not a ClientError) must not end the writer's pusher for it silently."""
    writer = spawn(*serve_args(role="writer", strategy="dispatcher", transport=redis_server.url, cluster_secret=SECRET))
    bogus = open_registry(redis_server.url, "http://a..b:1", 30.0)
    await bogus.start(None, lambda: None)
    try:
        await bogus.register("X")
        for i in range(1, 4):
            await post(session, writer.url, "X")
            await until_metric(session, writer.url, "livecomments_dispatch_push_failures_total", i)
    finally:
        await bogus.close()
