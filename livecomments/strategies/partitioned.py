"""Partitioned pub/sub: channel = stable_hash(video_id) % N; subscribe only where viewers are."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator
from typing import ClassVar

from livecomments.brokers.base import Broker, CountsStore
from livecomments.metrics import Metrics
from livecomments.strategies.pubsub import PubSubStrategy

log = logging.getLogger(__name__)


def partition_of(video_id: str, partitions: int) -> int:
    """Stable across processes and machines (CRC-32, not Python's salted hash())."""
    return zlib.crc32(video_id.encode()) % partitions


def channel_of(video_id: str, partitions: int) -> str:
    if partitions == 0:
        return f"lc:v:{video_id}"
    return f"lc:p:{partition_of(video_id, partitions)}"


class PartitionedStrategy(PubSubStrategy):
    """One subscription per channel per process, reference-counted by watched videos.
    The Hub lingers before unwatch, so viewer churn does not become subscribe churn."""

    name: ClassVar[str] = "partitioned"

    def __init__(self, broker: Broker, metrics: Metrics, partitions: int, counts: CountsStore | None = None) -> None:
        super().__init__(broker, metrics, counts)
        self._partitions = partitions
        self._refs: dict[str, int] = {}
        self._locks: dict[str, _ChannelLock] = {}

    def channel_of(self, video_id: str) -> str:
        return channel_of(video_id, self._partitions)

    async def watch(self, video_id: str) -> None:
        channel = self.channel_of(video_id)
        async with self._locked(channel):
            if self._refs.get(channel, 0) == 0:
                await self._broker.subscribe(channel)  # raises: nothing counted, caller rolls back
                self._metrics.subscriptions.inc()
            self._refs[channel] = self._refs.get(channel, 0) + 1

    async def unwatch(self, video_id: str) -> None:
        channel = self.channel_of(video_id)
        async with self._locked(channel):
            refs = self._refs.get(channel, 0) - 1
            if refs > 0:
                self._refs[channel] = refs
                return
            self._refs.pop(channel, None)
            self._metrics.subscriptions.dec()
            try:
                await self._broker.unsubscribe(channel)
            except Exception as e:  # the channel is forgotten; a stray message is just discarded
                log.warning("unsubscribe %s failed: %s", channel, e)

    @contextlib.asynccontextmanager
    async def _locked(self, channel: str) -> AsyncIterator[None]:
        """Serializes a channel's (un)subscribes across the videos sharing it. The lock is
        forgotten only when nobody holds it or waits for it: dropping it while a waiter is
        queued would let a newcomer take a fresh lock and subscribe alongside that waiter."""
        entry = self._locks.get(channel)
        if entry is None:
            entry = self._locks[channel] = _ChannelLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[channel]


class _ChannelLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holding or waiting
