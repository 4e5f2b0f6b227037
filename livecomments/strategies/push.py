"""One realtime server seen from a writer: a queue of comments, pushed in coalesced, signed POSTs."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from livecomments.metrics import Metrics
from livecomments.strategies.signing import MAX_PUSH_BYTES, PATH, sign

log = logging.getLogger(__name__)

COALESCE = 0.002  # seconds a push waits for more comments bound for the same server
PUSH_TIMEOUT = 2.0  # per request; a server slower than this is counted as failed
MAX_BATCH = 500  # comments per request, and at most MAX_PUSH_BYTES (every deliver endpoint takes that)
MAX_QUEUE = 10_000  # past this the oldest go: the server repairs the gap from storage


class Pusher:
    """At most one request in flight per server, so pushes to it stay in order, and what
    queues up meanwhile goes in the next one. Each server has its own task: a slow or dead
    server holds only its own queue, never the publish path or the other servers."""

    def __init__(self, url: str, session: aiohttp.ClientSession, secret: bytes, metrics: Metrics) -> None:
        self.url = url
        self._endpoint = url.rstrip("/") + PATH
        self._session = session
        self._secret = secret
        self._metrics = metrics
        self._queue: list[bytes] = []
        self._wake = asyncio.Event()
        self.used = time.monotonic()
        self._crashed = False  # logged with its traceback once, then counted only
        self._task = asyncio.create_task(self._run())

    def offer(self, data: bytes) -> None:
        """Called on the loop; never awaits."""
        if len(self._queue) >= MAX_QUEUE:
            del self._queue[: len(self._queue) - MAX_QUEUE + 1]
        self._queue.append(data)
        self.used = time.monotonic()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(COALESCE)  # the coalescing window: later comments join this push
            n = _batch_length(self._queue)
            batch, self._queue = self._queue[:n], self._queue[n:]
            if not self._queue:
                self._wake.clear()
            try:
                await self._push(b"[" + b",".join(batch) + b"]")
            except Exception:  # a bug or an unforeseen error (a bad URL in the registry): never die silently
                self._metrics.push_failures.inc()
                if not self._crashed:
                    self._crashed = True
                    log.exception("push to %s failed unexpectedly; going on with the next batch", self.url)

    async def _push(self, body: bytes) -> None:
        self._metrics.pushes.inc()
        try:
            async with asyncio.timeout(PUSH_TIMEOUT):
                headers = sign(self._secret, body)
                async with self._session.post(self._endpoint, data=body, headers=headers) as resp:
                    if resp.status != 204:
                        raise aiohttp.ClientError(f"{resp.status} {(await resp.read())[:200]!r}")
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            # At-most-once like pub/sub: the server's seq-gap repair reads the rest from storage.
            self._metrics.push_failures.inc()
            log.warning("push to %s failed: %s", self.url, e or type(e).__name__)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _batch_length(queue: list[bytes]) -> int:
    """How many queued comments the next push takes: up to MAX_BATCH, and a body (a JSON
    list) under MAX_PUSH_BYTES, so no push is refused unread as too large; never fewer than one."""
    size = 2
    for n, data in enumerate(queue[:MAX_BATCH]):
        size += len(data) + 1
        if size > MAX_PUSH_BYTES and n > 0:
            return n
    return min(len(queue), MAX_BATCH)
