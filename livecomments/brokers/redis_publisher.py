"""The writer's side of the Redis broker: ordered, pipelined, never holding the caller.

One task sends everything, in call order, as pipelines on one connection (a cluster
client routes each SPUBLISH to its slot's master, in order per node), so a channel's
messages leave in the order publish() was called: the writer calls it in the order
comments were stored.

publish() only queues: a post's 201 never waits for Redis (a frozen Redis must not turn
into slow acknowledgements and duplicate retries). The queue is bounded (MAX_UNSENT,
oldest dropped first) and retried with backoff while Redis is unreachable, then sent in
order once it is back. A message dropped or lost anyway is found by the realtime
processes' head check, which reads it from storage.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger(__name__)

MAX_BATCH = 512
MAX_UNSENT = 10_000


class Unsent:
    __slots__ = ("channel", "data")

    def __init__(self, channel: str, data: bytes) -> None:
        self.channel = channel
        self.data = data


class RedisPublisher:
    def __init__(self, url: str, sharded: bool, timeout: float, backoff: Callable[[int], float]) -> None:
        self._sharded = sharded
        self._timeout = timeout
        self._backoff = backoff
        self._client: Redis | RedisCluster
        no_retry = Retry(NoBackoff(), 0)  # a retry here would hold every post; the queue retries
        if sharded:
            parts = urlsplit(url)
            self._client = RedisCluster(
                host=parts.hostname or "127.0.0.1", port=parts.port or 6379, password=parts.password,
                username=parts.username, socket_connect_timeout=timeout, socket_timeout=timeout,
                retry=no_retry,
            )
        else:
            self._client = Redis.from_url(
                url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=no_retry,
            )
        self._unsent: deque[Unsent] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._dropped = 0
        self._retry_at = 0.0
        self._error = ""

    @property
    def client(self) -> Redis | RedisCluster:
        """The publishing client (a pool): other short commands may share it, never its queue."""
        return self._client

    def publish(self, channel: str, data: bytes) -> None:
        """Queue a message; never waits. Called on the loop."""
        self._unsent.append(Unsent(channel, data))
        if len(self._unsent) > MAX_UNSENT:
            self._unsent.popleft()
            self._dropped += 1
            if self._dropped == 1:
                log.warning("redis publish queue full (%d): dropping the oldest; realtime repairs from storage",
                            MAX_UNSENT)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        self._wake.set()

    async def _run(self) -> None:
        """The only sender: batches go out one after the other, never concurrently."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._unsent:
                delay = self._retry_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                batch = [self._unsent[i] for i in range(min(MAX_BATCH, len(self._unsent)))]
                try:
                    async with asyncio.timeout(self._timeout):
                        await self._send(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    self._failed(e)
                    continue
                if self._failures:
                    log.info("redis publishing works again (%d messages dropped meanwhile)", self._dropped)
                self._failures, self._retry_at, self._dropped = 0, 0.0, 0
                for entry in batch:
                    if self._unsent and self._unsent[0] is entry:  # publish() may have dropped the oldest
                        self._unsent.popleft()

    async def _send(self, batch: list[Unsent]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for entry in batch:
            if self._sharded:
                pipe.spublish(entry.channel, entry.data)
            else:
                pipe.publish(entry.channel, entry.data)
        await pipe.execute()

    def _failed(self, e: Exception) -> None:
        self._error = f"{type(e).__name__}: {e}"
        if self._failures == 0:
            log.warning("redis publish failed (%s); queueing until it is back", self._error)
        self._retry_at = asyncio.get_running_loop().time() + self._backoff(self._failures)
        self._failures += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._unsent:  # best effort ends here; realtime processes read these from storage
            log.warning("closing with %d unsent redis messages", len(self._unsent))
        self._unsent.clear()
        await self._client.aclose()
