"""Redis pub/sub broker: PUBLISH/SUBSCRIBE on one Redis, SPUBLISH/SSUBSCRIBE on a Redis Cluster.

Subscriber side: one connection per Redis (per master on a cluster), one reader task per
connection, and one supervisor task that owns them. Any failure of a link (error, EOF, no
reply to PING) ends the whole session: the supervisor marks the broker not ready, reconnects
with jittered exponential backoff, resubscribes to exactly the channels held, waits for every
confirmation, marks ready and calls on_reset (messages may have been lost meanwhile).

Publisher side: see livecomments.brokers.redis_publisher.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable

from redis.crc import key_slot

from livecomments.backoff import backoff
from livecomments.brokers.base import OnMessage, OnReset
from livecomments.brokers.redis_link import (
    CONNECT_TIMEOUT,
    STOP_TIMEOUT,
    BrokerUnavailable,
    Link,
    cluster_slots,
    connection_kwargs,
    stop_task,
)
from livecomments.brokers.redis_publisher import RedisPublisher

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 2.0  # subscribe confirmations, writes, one publish
HEALTH_INTERVAL = 1.0  # a link quiet this long gets a PING; 3x this without any reply is dead
BACKOFF_MIN, BACKOFF_MAX = 0.05, 2.0


def reconnect_backoff(failures: int) -> float:
    """Seconds before the next attempt: equal jitter between BACKOFF_MIN and BACKOFF_MAX."""
    return backoff(failures, BACKOFF_MIN, BACKOFF_MAX)


class RedisBroker:
    """At-most-once, FIFO per channel (one publishing connection, commands in call order).

    A publish-only process (a writer, started with on_message=None) opens no subscriber
    link and stays ready: it receives nothing, and publishing is best effort.
    """

    def __init__(self, url: str) -> None:
        self._sharded = url.startswith("redis+cluster://")
        self._conn_class, self._conn_kwargs = connection_kwargs(url, COMMAND_TIMEOUT)
        self._publisher = RedisPublisher(url, self._sharded, COMMAND_TIMEOUT, reconnect_backoff)
        self._sub_cmd, self._unsub_cmd = ("SSUBSCRIBE", "SUNSUBSCRIBE") if self._sharded else (
            "SUBSCRIBE", "UNSUBSCRIBE")
        self._on_message: OnMessage = lambda channel, data: None
        self._on_reset: OnReset = lambda: None
        self._wanted: set[str] = set()  # what the process holds: resubscribed after every reconnect
        self._confirmed: set[str] = set()  # confirmed on the current session
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._unsub_pending: dict[str, int] = {}  # our UNSUBSCRIBEs not yet acknowledged
        self._resubscribing: set[str] | None = None  # while a session opens: not yet confirmed
        self._up: asyncio.Future[None] | None = None
        self._links: dict[tuple[str, int], Link] = {}
        self._slots: list[tuple[int, int, tuple[str, int]]] = []  # cluster: (first, last, master)
        self._supervisor: asyncio.Task[None] | None = None
        self._ready = False
        self._connecting = True
        self._closed = False  # close() began: the supervisor opens no further session
        self._reason = "connecting to redis"

    @property
    def ready(self) -> bool:
        return self._supervisor is None or self._ready

    @property
    def not_ready_reason(self) -> str:
        return "" if self.ready else self._reason

    async def start(self, on_message: OnMessage | None, on_reset: OnReset, held: Iterable[str] = ()) -> None:
        if on_message is None:
            return  # publish-only: no subscriber link, always ready
        self._on_message, self._on_reset = on_message, on_reset
        self._wanted.update(held)  # every session subscribes to these, the first one included
        # Listen from the start, even with no channel yet: /readyz must say "not ready" while a
        # realtime process could not receive, not only once its first viewer subscribes.
        self._supervisor = asyncio.create_task(self._supervise())

    async def publish(self, channel: str, data: bytes) -> None:
        """Queued, sent in call order in the background: returns at once."""
        self._publisher.publish(channel, data)

    async def subscribe(self, *channels: str) -> None:
        """Returns once Redis confirmed every channel; raises (holding none of the new ones) if not."""
        if self._closed:
            raise BrokerUnavailable("broker closed")
        new = [c for c in channels if c not in self._wanted]
        self._wanted.update(new)
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise())
        try:
            if not self._ready and not self._connecting:
                raise BrokerUnavailable(self._reason)
            waits = [self._confirmation(c) for c in channels if c not in self._confirmed]
            # The first subscribe of a session waits for the connection too.
            async with asyncio.timeout(COMMAND_TIMEOUT if self._ready else CONNECT_TIMEOUT + COMMAND_TIMEOUT):
                if self._links and new:
                    await self._send(self._sub_cmd, new)
                await asyncio.gather(*waits)
        except BaseException:
            self._wanted.difference_update(new)
            for c in new:
                self._confirmed.discard(c)
            if self._links and self._ready:  # the server may have subscribed us after all
                try:
                    await self._send_unsubscribe(new)
                except Exception:  # the session is failing: its successor resubscribes to _wanted only
                    pass
            raise

    async def unsubscribe(self, *channels: str) -> None:
        gone = [c for c in channels if c in self._wanted]
        self._wanted.difference_update(gone)
        self._confirmed.difference_update(gone)
        if self._resubscribing is not None:
            self._resubscribing.difference_update(gone)
            self._check_up()
        if self._links and gone:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await self._send_unsubscribe(gone)

    async def close(self) -> None:
        """Bounded whatever the link is doing (connecting, resubscribing, backing off, frozen)."""
        self._closed = True
        if self._supervisor is not None and not await stop_task(self._supervisor):
            log.warning("redis subscriber did not stop within %g s of close; leaving it behind", STOP_TIMEOUT)
        await self._close_session(BrokerUnavailable("broker closed"))
        try:
            async with asyncio.timeout(STOP_TIMEOUT):  # on expiry its task is cancelled a second time
                await self._publisher.close()
        except TimeoutError:
            log.warning("redis publisher did not close within %g s; leaving it behind", STOP_TIMEOUT)

    # -- sending ----------------------------------------------------------

    def _confirmation(self, channel: str) -> asyncio.Future[None]:
        fut = self._waiters.get(channel)
        if fut is None:
            fut = self._waiters[channel] = asyncio.get_running_loop().create_future()
            # A waiter failed with its session may have no one awaiting it any more.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fut

    async def _send(self, command: str, channels: Iterable[str]) -> None:
        """On a cluster a (S)SUBSCRIBE may name one slot only, and goes to that slot's master."""
        if not self._sharded:
            await self._link_for("").send(command, *channels)
            return
        by_slot: dict[int, list[str]] = {}
        for c in channels:
            by_slot.setdefault(key_slot(c.encode()), []).append(c)
        for slot, group in by_slot.items():
            await self._link_for_slot(slot).send(command, *group)

    async def _send_unsubscribe(self, channels: list[str]) -> None:
        for c in channels:
            self._unsub_pending[c] = self._unsub_pending.get(c, 0) + 1
        await self._send(self._unsub_cmd, channels)

    def _link_for(self, channel: str) -> Link:
        if not self._sharded:
            return next(iter(self._links.values()))
        return self._link_for_slot(key_slot(channel.encode()))

    def _link_for_slot(self, slot: int) -> Link:
        for first, last, node in self._slots:
            if first <= slot <= last and node in self._links:
                return self._links[node]
        raise BrokerUnavailable(f"no cluster master serves slot {slot}")

    # -- receiving (runs in a link's reader task) --------------------------

    async def _read(self, link: Link) -> None:
        loop = asyncio.get_running_loop()
        while True:  # blocks without a timeout: liveness is the supervisor's PING, not a poll
            msg = await link.conn.read_response(timeout=math.inf, push_request=True)
            link.last_seen = loop.time()
            if isinstance(msg, list) and len(msg) == 3:
                self._on_push(msg[0], msg[1].decode(), msg[2])

    def _on_push(self, kind: bytes, channel: str, payload: object) -> None:
        if kind in (b"message", b"smessage"):
            try:
                self._on_message(channel, payload)  # type: ignore[arg-type]
            except Exception:  # one bad message must not cut the link for every video
                log.exception("on_message failed for %s", channel)
        elif kind in (b"subscribe", b"ssubscribe"):
            if channel in self._wanted:
                self._confirmed.add(channel)
            if self._resubscribing is not None:
                self._resubscribing.discard(channel)
                self._check_up()
            fut = self._waiters.pop(channel, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif kind in (b"unsubscribe", b"sunsubscribe"):
            pending = self._unsub_pending.get(channel, 0)
            if pending > 1:
                self._unsub_pending[channel] = pending - 1
            elif pending == 1:
                del self._unsub_pending[channel]
            elif channel in self._wanted:  # the server dropped us (its slot moved): start over
                raise BrokerUnavailable(f"redis unsubscribed {channel} (cluster slot moved?)")

    # -- the supervisor -----------------------------------------------------

    async def _supervise(self) -> None:
        attempt, lost = 0, False
        while not self._closed:  # a cancel() that redis-py lost (see stop_task) ends the loop here
            try:
                await self._open_session()
                if self._closed:
                    return
                self._connecting, attempt = False, 0
                log.info("redis subscriber link up (%d channels)", len(self._wanted))
                if lost:
                    self._on_reset()
                lost = True
                await self._watch_session()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never die silently: say why, back off, reconnect
                if self._closed:
                    return
                reason = f"redis link down: {type(e).__name__}: {e}"
                if self._ready or attempt == 0:
                    log.warning("%s; reconnecting", reason)
                self._ready, self._connecting, self._reason, lost = False, False, reason, True
                await self._close_session(BrokerUnavailable(reason))
                await asyncio.sleep(reconnect_backoff(attempt))
                attempt += 1
                self._connecting = True

    async def _open_session(self) -> None:
        if self._sharded:
            self._slots = await cluster_slots(self._conn_class, self._conn_kwargs)
            nodes = sorted({node for _, _, node in self._slots})
        else:
            nodes = [(str(self._conn_kwargs["host"]), int(str(self._conn_kwargs["port"])))]
        async with asyncio.timeout(CONNECT_TIMEOUT + COMMAND_TIMEOUT):
            links: dict[tuple[str, int], Link] = {}
            for host, port in nodes:
                kwargs = {**self._conn_kwargs, "host": host, "port": port}
                link = Link(self._conn_class(**kwargs), f"{host}:{port}")
                links[(host, port)] = link
                await link.conn.connect()  # type: ignore[no-untyped-call]
            for link in links.values():
                link.last_seen = asyncio.get_running_loop().time()
                link.reader = asyncio.create_task(self._read(link))
                link.reader.add_done_callback(self._on_reader_done)
            self._links = links
            wanted = list(self._wanted)
            self._resubscribing = set(wanted)
            up = self._up = asyncio.get_running_loop().create_future()
            if wanted:
                await self._send(self._sub_cmd, wanted)
            self._check_up()
            await up

    def _check_up(self) -> None:
        """Ready exactly when the last held channel is confirmed, before any subscribe() waiting
        on that confirmation resumes: a caller never sees its subscribe done but the broker not ready."""
        if self._resubscribing or self._resubscribing is None or self._up is None:
            return
        self._ready, self._resubscribing = True, None
        if not self._up.done():
            self._up.set_result(None)

    def _on_reader_done(self, task: asyncio.Task[None]) -> None:
        """Waiters must not sit out their timeout on a link that already failed."""
        if not task.cancelled():
            self._fail_waiters(BrokerUnavailable(f"redis link lost: {task.exception()}"))

    def _fail_waiters(self, exc: Exception) -> None:
        if self._up is not None and not self._up.done():
            self._up.set_exception(exc)
        waiters, self._waiters = self._waiters, {}
        for fut in waiters.values():
            if not fut.done():
                fut.set_exception(exc)

    async def _watch_session(self) -> None:
        """Returns only by raising (a reader ended, or a link stopped answering PING), or once closed."""
        loop = asyncio.get_running_loop()
        readers = {link.reader for link in self._links.values() if link.reader is not None}
        while not self._closed:
            done, _ = await asyncio.wait(readers, timeout=HEALTH_INTERVAL)
            for task in done:
                raise task.exception() or BrokerUnavailable("reader ended")
            now = loop.time()
            for link in self._links.values():
                quiet = now - link.last_seen
                if quiet > 3 * HEALTH_INTERVAL:
                    raise BrokerUnavailable(f"{link.name} did not answer PING for {quiet:.1f}s")
                if quiet >= HEALTH_INTERVAL:
                    async with asyncio.timeout(COMMAND_TIMEOUT):
                        await link.send("PING")

    async def _close_session(self, exc: Exception) -> None:
        links, self._links = self._links, {}
        self._resubscribing = self._up = None
        self._confirmed.clear()
        self._unsub_pending.clear()
        self._fail_waiters(exc)
        await asyncio.gather(*(link.close() for link in links.values()), return_exceptions=True)
