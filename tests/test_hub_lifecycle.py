"""A video's watch and unwatch under viewer churn: whatever the interleaving (viewers that
leave mid-join, the last viewer leaving while another arrives, videos sharing a channel),
once every viewer is gone nothing stays subscribed or registered."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest

from livecomments.backends import open_registry
from tests.fixtures.processes import RedisProcess
from tests.helpers import until_metric
from tests.sse import open_stream

VIDEOS = [f"churn{i}" for i in range(6)]
CHURNERS = 16
ROUNDS = 12


async def abandon(base: str, video: str) -> None:
    """Ask for a stream and hang up at once: the server may be anywhere in the join."""
    host, port = base.removeprefix("http://").split(":")
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /v1/videos/{video}/stream HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        writer.transport.abort()


async def churn(session: Any, base: str) -> None:
    async def one(i: int) -> None:
        for r in range(ROUNDS):
            video = VIDEOS[(i + r) % len(VIDEOS)]
            if (i + r) % 3 == 0:
                await abandon(base, video)
            else:
                (await open_stream(session, base, video)).close()

    await asyncio.gather(*(one(i) for i in range(CHURNERS)))


async def all_gone(session: Any, base: str) -> None:
    for name in ("livecomments_connections", "livecomments_watched_videos", "livecomments_subscriptions"):
        await until_metric(session, base, name, 0)


def redis_cli(redis: RedisProcess, *args: str) -> list[str]:
    out = subprocess.run(["redis-cli", "-p", str(redis.port), *args], capture_output=True, text=True,
                         timeout=5, check=True).stdout
    return out.split()


@pytest.mark.parametrize("partitions", [1, 0])
async def test_partitioned_churn_leaves_no_subscription(
    partitions: int, start_server: Any, session: Any, redis_server: RedisProcess,
) -> None:
    base = await start_server(strategy="partitioned", broker=redis_server.url, partitions=partitions,
                              unwatch_linger=0.001)
    await churn(session, base)
    await all_gone(session, base)
    assert redis_cli(redis_server, "pubsub", "channels") == []


async def test_dispatcher_churn_leaves_no_registration(start_server: Any, session: Any, redis_server: RedisProcess) -> None:
    base = await start_server(strategy="dispatcher", registry=redis_server.url, cluster_secret="s",
                              unwatch_linger=0.001)
    await churn(session, base)
    await all_gone(session, base)
    registry = open_registry(redis_server.url, "http://test.invalid", 2.0)
    await registry.start(None, lambda: None)
    try:
        assert [v for v in VIDEOS if await registry.lookup(v)] == []
    finally:
        await registry.close()
    assert redis_cli(redis_server, "keys", "lc:reg:v:*") == []
