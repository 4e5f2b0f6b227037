"""Viewer counts kept in Redis, for the processes that hear none of the channels they travel on.

Realtime processes send each other their counts on the videos' channels (strategies/pubsub.py);
a writer listens to no channel, yet GET /v1/videos/{id} asks it too. So each realtime process
also writes the counts it shares here, in the same tick, and a writer reads one hash.

Key lc:n:{video_id}: HASH server -> "count expires_at" (unix seconds by the writing process'
clock: a count not refreshed in time, a crashed process's, stops counting). The key itself
expires too, so a video nobody watches any more leaves nothing behind. On a Redis Cluster each
key lives on its own slot; the pipeline sends each command to its node.
"""

from __future__ import annotations

import asyncio
import math
import time
from urllib.parse import urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

TIMEOUT = 2.0  # seconds for one write or read: a Redis slower than this is a failed tick, tried again


class RedisCountsStore:
    """The CountsStore (brokers/base.py) beside a Redis broker, on the broker's URL (`redis://`,
    `rediss://`, `redis+cluster://`). Its own small client: connected on first use, so a
    process that never shares nor asks for a count opens no connection for it."""

    def __init__(self, url: str) -> None:
        no_retry = Retry(NoBackoff(), 0)  # the next tick retries; a retry here would only delay it
        self._client: Redis | RedisCluster
        if url.startswith("redis+cluster://"):
            parts = urlsplit(url)
            self._client = RedisCluster(
                host=parts.hostname or "127.0.0.1", port=parts.port or 6379, password=parts.password,
                username=parts.username, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT, retry=no_retry,
            )
        else:
            self._client = Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT, retry=no_retry)

    async def put(self, server: str, counts: dict[str, int], ttl: float) -> None:
        async with asyncio.timeout(TIMEOUT):
            await put_counts(self._client, server, counts, ttl)

    async def total(self, video_id: str) -> int:
        async with asyncio.timeout(TIMEOUT):
            return await count(self._client, video_id)

    async def close(self) -> None:
        await self._client.aclose()


def _key(video_id: str) -> str:
    return f"lc:n:{video_id}"


async def put_counts(client: Redis | RedisCluster, server: str, counts: dict[str, int], ttl: float) -> None:
    """One pipeline for every count; 0 removes the server's entry."""
    pipe = client.pipeline(transaction=False)
    expires = f"{time.time() + ttl:.3f}"
    for video_id, n in counts.items():
        if n:
            pipe.hset(_key(video_id), server, f"{n} {expires}")
            pipe.expire(_key(video_id), math.ceil(ttl))
        else:
            pipe.hdel(_key(video_id), server)
    await pipe.execute()


async def count(client: Redis | RedisCluster, video_id: str) -> int:
    """The video's viewers summed over the processes whose count is still fresh."""
    fields = await client.hgetall(_key(video_id))
    now, total = time.time(), 0
    for value in fields.values():
        n, _, expires = (value if isinstance(value, str) else value.decode()).partition(" ")
        if float(expires) > now:
            total += int(n)
    return total
