"""ZooKeeper registry: one session per process, one ephemeral znode per (video, server).

Znodes, under the URL's chroot (zk://HOST:PORT[,HOST:PORT…]/CHROOT, default /livecomments):
  v/{video}/{nonce} {quoted url}   ephemeral, data = the advertised URL: this server holds the video
  n/{video}/{nonce}                ephemeral, data = this server's viewers of the video (counts)
The URL is in the child's name too, so a lookup is one getChildren. The per-video parents
are persistent: whoever leaves one empty (a deregister, a lookup finding none) deletes it.

Leases are ZooKeeper's sessions, not ours: no heartbeat task and no sweeper. A killed
server's session expires after the negotiated session timeout (`registry_ttl`, clamped by
the ensemble to [2, 20] x tickTime) and ZooKeeper deletes its znodes itself. Writers follow
changes with one-shot watches: a lookup leaves a child watch on the video it read (an
exists watch if nobody holds it), the watch fires once, `on_change(video)` makes the
dispatcher look up again, which sets the next watch. No polling.

Session states, as kazoo reports them (KazooState, see kazoo's client docs):
  SUSPENDED  the connection dropped, the session may live on: our znodes stay, so we keep
             serving; not ready (a balancer sends new viewers elsewhere); calls fail fast.
             kazoo fires every pending watch with a NONE event: on reconnect a writer gets
             on_change(None) and re-reads (and re-watches) every cached video.
  LOST       the ensemble expired the session: our znodes are gone. kazoo opens a new
             session by itself; on CONNECTED we put back every video and count we hold,
             then fire on_reset (pushes were missed meanwhile) and on_change(None).

Client library: kazoo (python-zk), not aiozk. Both install from PyPI and both speak to
Debian's ZooKeeper 3.8; kazoo is the one most deployments run, with its session state
machine documented and tested against every ZooKeeper release, while aiozk, asyncio-native,
has a small user base and less explicit rules for expiry and watch re-arming. kazoo runs
its own threads; we use only its *_async calls (they only queue a request) and bridge their
results to asyncio futures with `rawlink`: no thread per call, nothing blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Coroutine, Iterable
from typing import Any
from urllib.parse import quote, unquote

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError, NotEmptyError
from kazoo.protocol.states import EventType, WatchedEvent

from livecomments.backoff import backoff
from livecomments.registry.base import OnChange, OnReset

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/livecomments"
BATCH = 512  # requests in flight at once when restoring or reading counts (one connection, pipelined)


def parse_url(url: str) -> tuple[str, str]:
    """zk://h1:p1,h2:p2/chroot -> ("h1:p1,h2:p2", "/chroot")."""
    hosts, _, path = url.removeprefix("zk://").partition("/")
    if not hosts:
        raise ValueError(f"registry {url!r}: use zk://HOST:PORT[,HOST:PORT]/CHROOT")
    path = path.strip("/")
    return hosts, "/" + path if path else DEFAULT_ROOT


class ZooKeeperRegistry:
    errors = (KazooException, OSError, TimeoutError, ConnectionError)

    def __init__(self, url: str, self_url: str, ttl: float) -> None:
        hosts, self._root = parse_url(url)
        self._url = url
        self._ttl = ttl
        self._self_url = self_url
        self._nonce = secrets.token_hex(6)
        self._name = f"{self._nonce} {quote(self_url, safe='')}"
        # connection_retry: kazoo redials for ever (up to 1 s apart), also after an expiry.
        self._zk = KazooClient(hosts=hosts, timeout=ttl, connection_retry={"max_tries": -1, "max_delay": 1.0})
        self._videos: set[str] = set()  # registered here: put back after a LOST session
        self._counts: dict[str, int] = {}  # our non-zero counts: put back likewise
        self._connected = False
        self._lost = False  # the session expired and our znodes are not all back yet
        self._reason = "registry not connected"
        self._on_change: OnChange | None = None
        self._on_reset: OnReset = lambda: None
        self._restorer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def ready(self) -> bool:
        return self._connected and not self._lost

    @property
    def not_ready_reason(self) -> str:
        return self._reason

    # -- the session -------------------------------------------------------

    async def start(self, on_change: OnChange | None, on_reset: OnReset) -> None:
        """No ensemble member answering within max(2, ttl) seconds is a degraded start, as a Redis
        broker's: not ready (the reason names the URL), streams served from storage, and kazoo
        keeps dialling; the first session is then treated as a restored one (_restore)."""
        self._loop = asyncio.get_running_loop()
        self._on_change, self._on_reset = on_change, on_reset
        self._zk.add_listener(self._listener)
        live = self._zk.start_async()  # unlike start(), it does not give up: kazoo retries for ever
        if not await asyncio.to_thread(live.wait, max(2.0, self._ttl)):
            # Before any await: a CONNECTED arriving now is handled on the loop after this, as a restore.
            self._lost = True
            self._reason = f"registry {self._url} unreachable: no ZooKeeper answered within {max(2.0, self._ttl):g} s"
            log.warning("%s; streams are served from storage until it answers", self._reason)
            return
        self._connected, self._reason = self._zk.state == KazooState.CONNECTED, ""
        for tree in ("v", "n"):
            await self._run(self._zk.ensure_path_async(f"{self._root}/{tree}"))

    def _listener(self, state: str) -> None:
        """kazoo's thread: must not block; the loop does the rest."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed after close(): nothing to tell
                self._loop.call_soon_threadsafe(self._on_state, state)

    def _on_state(self, state: str) -> None:
        self._connected = state == KazooState.CONNECTED
        if state == KazooState.LOST:
            self._lost, self._reason = True, "registry session expired: our registrations are gone"
            log.warning("%s", self._reason)
        elif state == KazooState.SUSPENDED:
            self._reason = "registry connection lost (the session may still hold our registrations)"
            log.warning("%s", self._reason)
        elif self._lost:
            if self._restorer is None or self._restorer.done():
                self._restorer = asyncio.create_task(self._restore())
        else:
            self._reason = ""
            self._changed(None)  # kazoo reset our watches on the disconnect: re-read, re-watch

    async def _restore(self) -> None:
        """A new session: put back what the expired one held, then say pushes may have been missed."""
        failures = 0
        while self._connected:
            try:
                await self._batched(self._put_back(v) for v in list(self._videos))
                await self._batched(self._put_count_back(v) for v in list(self._counts))
            except self.errors as e:
                log.warning("restoring the registry after a session expiry failed: %s", e)
                await asyncio.sleep(backoff(failures, 0.1, 1.0))
                failures += 1
                continue
            log.warning("registry session was lost; re-registered %d videos", len(self._videos))
            self._lost, self._reason = False, ""
            self._on_reset()
            self._changed(None)
            return

    async def _put_back(self, video_id: str) -> None:
        if video_id in self._videos:  # not deregistered since the restore began
            await self._put(video_id)

    async def _put_count_back(self, video_id: str) -> None:
        if n := self._counts.get(video_id, 0):
            await self._put_count(video_id, n)

    # -- calls -------------------------------------------------------------

    async def _run(self, request: Any) -> Any:
        """A kazoo IAsyncResult as an awaitable, bounded. Fails fast while disconnected: a
        request queued in kazoo would wait for the reconnect, and no caller should."""
        if not self._connected:
            raise ConnectionError(self._reason or "registry not connected")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any) -> None:  # kazoo's callback thread
            def set_() -> None:
                if future.done():
                    return  # timed out, cancelled: the late answer goes nowhere
                try:
                    future.set_result(result.get_nowait())
                except Exception as e:
                    future.set_exception(e)

            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(set_)

        request.rawlink(settle)
        async with asyncio.timeout(max(1.0, self._ttl / 2)):
            return await future

    async def _batched(self, calls: Iterable[Coroutine[Any, Any, Any]]) -> list[Any]:
        out: list[Any] = []
        pending = list(calls)
        for i in range(0, len(pending), BATCH):
            out += await asyncio.gather(*pending[i : i + BATCH])
        return out

    async def _prune(self, parent: str) -> None:
        """Delete a per-video parent if it is empty; a racing create re-makes it (kazoo's makepath retries)."""
        with contextlib.suppress(NoNodeError, NotEmptyError):
            await self._run(self._zk.delete_async(parent))

    def _watch(self, event: WatchedEvent) -> None:
        """kazoo's thread. A NONE event is kazoo dropping the watch on a disconnect: the
        reconnect's on_change(None) covers it."""
        if event.type != EventType.NONE and event.path and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._changed, event.path.rpartition("/")[2])

    def _changed(self, video_id: str | None) -> None:
        if self._on_change is not None:
            self._on_change(video_id)

    # -- routes ------------------------------------------------------------

    async def _put(self, video_id: str) -> None:
        path = f"{self._root}/v/{video_id}/{self._name}"
        with contextlib.suppress(NodeExistsError):  # ours: a retry after a connection loss
            await self._run(self._zk.create_async(path, self._self_url.encode(), ephemeral=True, makepath=True))

    async def register(self, video_id: str) -> None:
        await self._put(video_id)
        self._videos.add(video_id)

    async def deregister(self, video_id: str) -> None:
        self._videos.discard(video_id)
        with contextlib.suppress(NoNodeError):
            await self._run(self._zk.delete_async(f"{self._root}/v/{video_id}/{self._name}"))
        await self._prune(f"{self._root}/v/{video_id}")

    async def lookup(self, video_id: str) -> frozenset[str]:
        """One getChildren; a process with on_change leaves a watch on what it read."""
        parent = f"{self._root}/v/{video_id}"
        watch = self._watch if self._on_change is not None else None
        while True:
            try:
                children: list[str] = await self._run(self._zk.get_children_async(parent, watch=watch))
            except NoNodeError:
                if await self._run(self._zk.exists_async(parent, watch=watch)) is None:
                    return frozenset()
                continue  # created between the two calls
            if not children:
                await self._prune(parent)  # a crashed server's leftover: its watch fires, we look again
            return frozenset(unquote(c.partition(" ")[2]) for c in children)

    # -- viewer counts: data of ephemeral znodes, gone with the session ------

    async def _put_count(self, video_id: str, n: int) -> None:
        path = f"{self._root}/n/{video_id}/{self._nonce}"
        try:
            await self._run(self._zk.set_async(path, str(n).encode()))
        except NoNodeError:
            with contextlib.suppress(NodeExistsError):
                await self._run(self._zk.create_async(path, str(n).encode(), ephemeral=True, makepath=True))
                return
            await self._run(self._zk.set_async(path, str(n).encode()))

    async def _drop_count(self, video_id: str) -> None:
        with contextlib.suppress(NoNodeError):
            await self._run(self._zk.delete_async(f"{self._root}/n/{video_id}/{self._nonce}"))
        await self._prune(f"{self._root}/n/{video_id}")

    async def put_counts(self, counts: dict[str, int]) -> None:
        for video_id, n in counts.items():
            if n:
                self._counts[video_id] = n
            else:
                self._counts.pop(video_id, None)
        await self._batched(self._put_count(v, n) if n else self._drop_count(v) for v, n in counts.items())

    async def _children(self, parent: str) -> list[str]:
        try:
            children: list[str] = await self._run(self._zk.get_children_async(parent))
        except NoNodeError:
            return []
        return children

    async def _count(self, path: str) -> int:
        try:
            data, _ = await self._run(self._zk.get_async(path))
        except NoNodeError:  # its session ended between the two reads
            return 0
        return int(data or b"0")

    async def counts(self, video_ids: list[str], *, others: bool) -> dict[str, int]:
        """Two pipelined rounds: every video's children, then every child's count."""
        lists = await self._batched(self._children(f"{self._root}/n/{v}") for v in video_ids)
        paths = [(v, f"{self._root}/n/{v}/{c}") for v, cs in zip(video_ids, lists, strict=True) for c in cs
                 if not (others and c == self._nonce)]
        totals = dict.fromkeys(video_ids, 0)
        for (video_id, _), n in zip(paths, await self._batched(self._count(p) for _, p in paths), strict=True):
            totals[video_id] += n
        return totals

    # -- stop ----------------------------------------------------------------

    async def close(self) -> None:
        """Closing the session deletes our znodes at once (not after the timeout); the
        per-video parents we leave empty go first, best effort."""
        if self._restorer is not None:
            self._restorer.cancel()
            await asyncio.gather(self._restorer, return_exceptions=True)
        if self._connected:
            try:
                await self._batched([*(self.deregister(v) for v in list(self._videos)),
                                     *(self._drop_count(v) for v in list(self._counts))])
            except self.errors as e:
                log.warning("deregistering at close failed (the session close drops them): %s", e)
        self._connected, self._on_change = False, None
        self._zk.remove_listener(self._listener)  # the session's end is ours, not news
        await asyncio.to_thread(self._stop)
        self._loop = None

    def _stop(self) -> None:
        self._zk.stop()
        self._zk.close()

