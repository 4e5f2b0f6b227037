"""The writer's side of the Redis broker: ordered, pipelined, fast to fail.

One task sends everything, in call order, as pipelines on one connection (a cluster
client routes each SPUBLISH to its slot's master, in order per node), so a channel's
messages leave in the order publish() was called: the writer calls it in the order
comments were stored.

While Redis is unreachable publish() raises at once (the comment is already stored,
posting must go on), but the message stays queued, up to MAX_UNSENT (oldest dropped
first), and goes out in order once the link is back. That matters for the last comments
of an outage: a realtime process repairs a seq gap only when a later comment arrives.
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


class PublishUnavailable(ConnectionError):
    """Redis is unreachable; the message is queued for when it is back."""


class Unsent:
    __slots__ = ("channel", "data", "waiter")

    def __init__(self, channel: str, data: bytes, waiter: asyncio.Future[None] | None) -> None:
        self.channel = channel
        self.data = data
        self.waiter = waiter


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
        self._retry_at = 0.0
        self._error = ""

    async def publish(self, channel: str, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        down = loop.time() < self._retry_at
        waiter = None if down else loop.create_future()
        self._unsent.append(Unsent(channel, data, waiter))
        if len(self._unsent) > MAX_UNSENT:
            dropped = self._unsent.popleft()
            if dropped.waiter is not None and not dropped.waiter.done():
                dropped.waiter.set_exception(PublishUnavailable("dropped: too many unsent messages"))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        self._wake.set()
        if waiter is None:
            raise PublishUnavailable(f"redis unreachable ({self._error}); queued for retry")
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())  # may outlive its caller
        async with asyncio.timeout(self._timeout):
            await asyncio.shield(waiter)

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
                    self._failed(batch, e)
                    continue
                if self._failures:
                    log.info("redis publishing works again")
                self._failures, self._retry_at = 0, 0.0
                for entry in batch:
                    if self._unsent and self._unsent[0] is entry:  # publish() may have dropped the oldest
                        self._unsent.popleft()
                    if entry.waiter is not None and not entry.waiter.done():
                        entry.waiter.set_result(None)

    async def _send(self, batch: list[Unsent]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for entry in batch:
            if self._sharded:
                pipe.spublish(entry.channel, entry.data)
            else:
                pipe.publish(entry.channel, entry.data)
        await pipe.execute()

    def _failed(self, batch: list[Unsent], e: Exception) -> None:
        self._error = f"{type(e).__name__}: {e}"
        if self._failures == 0:
            log.warning("redis publish failed (%s); queueing until it is back", self._error)
        self._retry_at = asyncio.get_running_loop().time() + self._backoff(self._failures)
        self._failures += 1
        for entry in batch:
            if entry.waiter is not None and not entry.waiter.done():
                entry.waiter.set_exception(PublishUnavailable(self._error))
            entry.waiter = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for entry in self._unsent:  # best effort ends here: nobody waits out a timeout
            if entry.waiter is not None and not entry.waiter.done():
                entry.waiter.set_exception(PublishUnavailable("broker closed"))
        self._unsent.clear()
        await self._client.aclose()
