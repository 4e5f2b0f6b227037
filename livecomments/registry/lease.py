"""The lease lifecycle every shared registry has (Redis, etcd): written once, here.

One lease per process, kept alive by one heartbeat task every ttl/3 whatever the number of
videos. When a renewal finds the lease lapsed (the process was away longer than the TTL and
the registry dropped its registrations), every video is put back and `on_reset` fired,
because pushes may have been missed meanwhile. A process that looks up (a writer) also
follows the registry's change feed, reconnecting with backoff, and is told `on_change(None)`
after each (re)start, since changes made while it was away are not replayed.

Readiness: the lease is held, the feed (if any) is up, and no restore is under way.

A registry down at start is a degraded start, as a Redis broker's: the process serves (its
streams from storage), says not ready with the registry's URL and what failed, and takes its
lease (and follows the feed) once the registry answers, retrying with backoff meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from livecomments.backoff import backoff, cancelling
from livecomments.registry.base import OnChange, OnReset

log = logging.getLogger(__name__)

FEED_BACKOFF_MIN, FEED_BACKOFF_MAX = 0.1, 2.0


class LeasedRegistry:
    """Backends implement the hooks below; `register`, `deregister` and `lookup` are theirs."""

    errors: tuple[type[Exception], ...] = (OSError,)  # a failure of the registry, not a bug; OSError always in

    def __init__(self, url: str, ttl: float) -> None:
        self._url = url
        self._ttl = ttl
        self._opened = False  # the lease was taken once: the heartbeat keeps it from then on
        self._videos: set[str] = set()  # what this process registered: put back after a lapse
        self._lease_until = 0.0  # monotonic; the lease is ours until then
        self._feed_up = True
        self._restoring = False  # the lease lapsed and our videos are not back yet
        self._reason = ""
        self._tasks: list[asyncio.Task[None]] = []

    # -- backend hooks ---------------------------------------------------

    async def _open(self) -> None:
        """Take the lease; raises if the registry is unreachable (refused at start)."""
        raise NotImplementedError

    async def _renew(self) -> bool:
        """Renew the lease; True if it had lapsed (and a new one is held now)."""
        raise NotImplementedError

    async def _restore(self, videos: list[str]) -> None:
        """Register these videos again under the current lease."""
        raise NotImplementedError

    async def _feed(self, on_change: OnChange, started: Callable[[], None]) -> None:
        """One session of the change feed: call `started` once it is live, then on_change
        per change; returns or raises when the session ends."""
        raise NotImplementedError

    async def _release(self) -> None:
        """A clean stop: drop our registrations now, not after the TTL; close clients."""
        raise NotImplementedError

    # -- the lifecycle ---------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._feed_up and not self._restoring and time.monotonic() < self._lease_until

    @property
    def not_ready_reason(self) -> str:
        return self._reason or "registry lease lost"

    async def start(self, on_change: OnChange | None, on_reset: OnReset) -> None:
        try:
            await self._begin(on_change, on_reset)
        except self.errors as e:
            if self._opened:
                raise  # the feed did not come up in time: as before, refused at start
            self._reason = f"registry {self._url} unreachable: {e or type(e).__name__}"
            log.warning("%s; streams are served from storage until it answers", self._reason)
            self._tasks.append(asyncio.create_task(self._begin_later(on_change, on_reset)))

    async def _begin(self, on_change: OnChange | None, on_reset: OnReset, *, wait_feed: bool = True) -> None:
        started = time.monotonic()
        await self._open()
        self._opened = True
        self._lease_until = started + self._ttl
        self._tasks.append(asyncio.create_task(self._keep_alive(on_reset)))
        if on_change is not None:
            self._feed_up = False
            up = asyncio.get_running_loop().create_future()
            self._tasks.append(asyncio.create_task(self._follow(on_change, up)))
            if wait_feed:
                async with asyncio.timeout(max(2.0, self._ttl)):
                    await up

    async def _begin_later(self, on_change: OnChange | None, on_reset: OnReset) -> None:
        failures = 0
        while not self._opened:
            await asyncio.sleep(backoff(failures, FEED_BACKOFF_MIN, FEED_BACKOFF_MAX))
            failures += 1
            try:
                await self._begin(on_change, on_reset, wait_feed=False)  # the feed task says when it is up
            except self.errors as e:
                if cancelling():
                    raise asyncio.CancelledError from e
                self._reason = f"registry {self._url} unreachable: {e or type(e).__name__}"
        log.warning("registry %s answered: lease taken", self._url)

    async def _keep_alive(self, on_reset: OnReset) -> None:
        """The one heartbeat of the process."""
        while not cancelling():  # a client library may have swallowed our cancellation (backoff.cancelling)
            await asyncio.sleep(self._ttl / 3)
            started = time.monotonic()
            try:
                if await self._renew():
                    self._restoring = True
                self._lease_until = started + self._ttl
                if self._restoring:
                    if self._videos:
                        await self._restore(list(self._videos))
                    log.warning("registry lease was lost; re-registered %d videos", len(self._videos))
                    on_reset()
                self._restoring, self._reason = False, ""
            except self.errors as e:
                if cancelling():
                    raise asyncio.CancelledError from e
                self._reason = f"registry heartbeat failed: {e}"
                log.warning("%s", self._reason)

    async def _follow(self, on_change: OnChange, up: asyncio.Future[None]) -> None:
        failures = 0

        def started() -> None:
            nonlocal failures
            self._feed_up, failures = True, 0
            on_change(None)
            if not up.done():
                up.set_result(None)

        while True:
            try:
                await self._feed(on_change, started)
                raise ConnectionError("the registry ended the change feed")
            except self.errors as e:
                if cancelling():
                    raise asyncio.CancelledError from e
                self._feed_up = False
                self._reason = f"registry change feed lost: {e}"
                log.warning("%s", self._reason)
            await asyncio.sleep(backoff(failures, FEED_BACKOFF_MIN, FEED_BACKOFF_MAX))
            failures += 1

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._release()
