"""Dispatcher: no broker. Realtime servers register the videos they hold in a registry;
writers push each comment only to the servers registered for its video.

Writer side, the route cache: video -> servers, loaded from the registry on a video's
first comment and then kept fresh by the registry's change feed (Redis pub/sub, etcd
watch, or in-process calls), so a comment costs no registry round trip.

The join guarantee. `watch` returns once the registration is visible to lookups. A writer
whose cache still says "not there" may push a few comments past the new server before the
change reaches it. So when a refresh finds a server newly added to a video, the writer
pushes it the latest comment it published for that video: the server either has it already
(a duplicate, dropped) or sees a seq jump and reads everything it missed from storage. Every
comment stored after `watch` returned therefore reaches the new server as soon as each writer
hears of the change (milliseconds), with no later comment needed. If a change feed drops,
it reports a reset on reconnect and the writer refreshes every cached video the same way.

Realtime side, what arrives: pushes (authenticated and parsed by the HTTP edge,
edge/internal.py, then handed to `receive`) and, in a `both` process, the writer half's own
comments (no HTTP): both through the Inbox, where they are counted as received, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import aiohttp

from livecomments.brokers.base import OnReset
from livecomments.metrics import Metrics
from livecomments.model import Comment
from livecomments.registry.base import Registry
from livecomments.strategies.base import CountsShare, Deliver, Inbox, OnCounts
from livecomments.strategies.push import Pusher

if TYPE_CHECKING:
    from livecomments.config import Config

log = logging.getLogger(__name__)

LOCAL = "local:"  # the advertised URL of a process that was given none (one `both` process)
IDLE = 60.0  # seconds after which an unused route or pusher is forgotten
MAX_WAITING = 1000  # comments of one video held while its first registry lookup is under way


class _Route:
    __slots__ = ("targets", "waiting", "last", "used", "dirty", "loader")

    def __init__(self) -> None:
        self.targets: frozenset[str] | None = None  # None until the first lookup answered
        self.waiting: list[Comment] = []  # published before that, in order
        self.last: Comment | None = None  # the latest comment this writer published here
        self.used = time.monotonic()
        self.dirty = False
        self.loader: asyncio.Task[None] | None = None


class DispatcherStrategy:
    name: ClassVar[str] = "dispatcher"

    def __init__(self, config: Config, metrics: Metrics, registry: Registry) -> None:
        self._self_url = config.advertise_url or LOCAL
        self._registry = registry
        self._secret = config.cluster_secret.encode()
        self._serves_writer = config.serves_writer
        self._metrics = metrics
        self._inbox: Inbox | None = None  # None on a writer-only process: it receives nothing
        self._routes: dict[str, _Route] = {}
        self._pushers: dict[str, Pusher] = {}
        self._session: aiohttp.ClientSession | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._registry.ready

    @property
    def not_ready_reason(self) -> str:
        return self._registry.not_ready_reason

    async def start(self, deliver: Deliver | None, on_reset: OnReset, on_counts: OnCounts | None = None) -> None:
        self._inbox = None if deliver is None else Inbox(deliver, self._metrics)
        if self._serves_writer:
            # Keep-alive pool shared by every pusher; per-push timeouts are the pushers' own.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=8),
            )
            self._sweeper = asyncio.create_task(self._sweep())
        await self._registry.start(self._on_change if self._serves_writer else None, on_reset)

    # -- writer side -------------------------------------------------------

    async def publish(self, comment: Comment) -> None:
        """Returns at once, so a slow registry never holds a post's acknowledgement: a
        video's first comments wait in its route, in order, until the lookup answers."""
        route = self._routes.get(comment.video_id)
        if route is None:
            route = self._routes[comment.video_id] = _Route()
            route.loader = asyncio.create_task(self._load(comment.video_id, route))
        else:
            self._metrics.registry_cache_hits.inc()
        route.used = time.monotonic()
        if route.last is None or comment.seq > route.last.seq:
            route.last = comment
        if route.targets is None:
            if len(route.waiting) >= MAX_WAITING:  # a registry this slow: the head check repairs the oldest
                del route.waiting[0]
            route.waiting.append(comment)
            return
        self._metrics.servers_per_video.observe(len(route.targets))
        self._send(comment, route.targets)

    def _send(self, comment: Comment, targets: frozenset[str]) -> None:
        data = comment.to_json()
        for url in targets:
            if url == self._self_url:
                if self._inbox is not None:  # our own realtime half: no HTTP
                    self._inbox.take((comment,), len(data))
                continue
            pusher = self._pushers.get(url)
            if pusher is None:
                assert self._session is not None
                pusher = self._pushers[url] = Pusher(url, self._session, self._secret, self._metrics)
            pusher.offer(data)

    def _on_change(self, video_id: str | None) -> None:
        """From the registry's change feed, on the loop."""
        routes = self._routes.items() if video_id is None else [(video_id, self._routes.get(video_id))]
        for vid, route in list(routes):
            if route is None:
                continue  # not cached: the next comment looks it up afresh
            route.dirty = True
            if route.loader is None:
                route.loader = asyncio.create_task(self._load(vid, route))

    async def _load(self, video_id: str, route: _Route) -> None:
        """(Re)read a video's servers until no change arrived meanwhile; push the latest
        comment to servers that were not there before (the join guarantee above)."""
        try:
            while True:
                route.dirty = False
                self._metrics.registry_lookups.inc()
                try:
                    targets = await self._registry.lookup(video_id)
                except Exception as e:
                    log.warning("registry lookup of %s failed: %s", video_id, e)
                    if route.targets is None:
                        # Not cached: the next comment retries. The waiting ones are left to the
                        # realtime processes' head check, which reads them from storage.
                        self._routes.pop(video_id, None)
                        route.targets, route.waiting = frozenset(), []
                    return
                added = targets - route.targets if route.targets is not None else frozenset()
                route.targets = targets
                waiting, route.waiting = route.waiting, []
                for comment in waiting:
                    self._metrics.servers_per_video.observe(len(targets))
                    self._send(comment, targets)
                if added and route.last is not None:
                    self._send(route.last, frozenset(added))
                if not route.dirty:
                    return
        finally:
            route.loader = None

    async def _sweep(self) -> None:
        """Forget routes and pushers unused for IDLE seconds, so memory follows live videos."""
        while True:
            await asyncio.sleep(IDLE / 4)
            cutoff = time.monotonic() - IDLE
            for vid in [v for v, r in self._routes.items() if r.used < cutoff and r.loader is None]:
                del self._routes[vid]
            for url in [u for u, p in self._pushers.items() if p.used < cutoff]:
                await self._pushers.pop(url).close()

    # -- realtime side -----------------------------------------------------

    def receive(self, comments: Sequence[Comment], size: int) -> None:
        """A push: a list of comments, in the order the writer stored them."""
        if self._inbox is not None:
            self._inbox.take(comments, size)

    async def watch(self, video_id: str) -> None:
        await self._registry.register(video_id)  # raises: the hub rolls the join back

    async def unwatch(self, video_id: str) -> None:
        await self._registry.deregister(video_id)

    # -- viewer counts: per server in the registry, under its lease ---------

    async def share_counts(self, share: CountsShare) -> dict[str, int] | None:
        """One batched write, one batched read. `fresh` needs nothing: the registry holds every
        count; nor `ttl`: the lease expires a dead process's counts; nor `server`: the registry
        knows its processes."""
        if share.changed:
            await self._registry.put_counts(share.changed)
        return await self._registry.counts(share.watched, others=True) if share.watched else {}

    async def count_viewers(self, video_id: str) -> int | None:
        return (await self._registry.counts([video_id], others=False)).get(video_id, 0)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for route in self._routes.values():
            if route.loader is not None:
                route.loader.cancel()
        await asyncio.gather(*(r.loader for r in self._routes.values() if r.loader), return_exceptions=True)
        for pusher in self._pushers.values():
            await pusher.close()
        await self._registry.close()
        if self._session is not None:
            await self._session.close()
