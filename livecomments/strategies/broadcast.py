"""Broadcast-all: one channel; every realtime process gets every comment."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from livecomments.brokers.base import Broker, OnReset
from livecomments.metrics import Metrics
from livecomments.strategies.base import Deliver
from livecomments.strategies.pubsub import PubSubStrategy

log = logging.getLogger(__name__)

CHANNEL = "lc:all"
RETRY_S = 1.0  # between subscribe attempts while the broker is not up yet at start


class BroadcastStrategy(PubSubStrategy):
    """The simplest design and the most wasteful: the Hub discards (and counts) every
    comment for a video this process has no viewer of.

    A realtime process starts even if the broker is not up yet (it starts in any order
    with Redis): it says not ready, refuses streams, and subscribes once it can. From
    then on the broker keeps the subscription across reconnects."""

    name: ClassVar[str] = "broadcast"

    def __init__(self, broker: Broker, metrics: Metrics) -> None:
        super().__init__(broker, metrics)
        self._listening = False
        self._subscribed = False
        self._retry: asyncio.Task[None] | None = None

    def channel_of(self, video_id: str) -> str:
        return CHANNEL

    @property
    def ready(self) -> bool:
        return self._broker.ready and (self._subscribed or not self._listening)

    @property
    def not_ready_reason(self) -> str:
        if self._broker.ready:
            return f"not subscribed to {CHANNEL} yet"
        return self._broker.not_ready_reason

    async def start(self, deliver: Deliver | None, on_reset: OnReset) -> None:
        await super().start(deliver, on_reset)
        if deliver is None:
            return
        self._listening = True
        try:
            await self._broker.subscribe(CHANNEL)
        except Exception as e:
            log.warning("cannot subscribe to %s yet (%s); retrying", CHANNEL, e)
            self._retry = asyncio.create_task(self._subscribe_later(on_reset))
        else:
            self._now_subscribed()

    async def _subscribe_later(self, on_reset: OnReset) -> None:
        while True:
            await asyncio.sleep(RETRY_S)
            try:
                await self._broker.subscribe(CHANNEL)
            except Exception:
                continue
            self._now_subscribed()
            on_reset()  # anything published before now reached nobody here: repair from storage
            return

    def _now_subscribed(self) -> None:
        self._subscribed = True
        self._metrics.subscriptions.set(1)
        log.info("subscribed to %s", CHANNEL)

    async def watch(self, video_id: str) -> None:
        if not self._subscribed:
            raise ConnectionError(self.not_ready_reason)

    async def unwatch(self, video_id: str) -> None:
        pass

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
        await super().close()
