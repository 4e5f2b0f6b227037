"""Broadcast-all: one channel; every realtime process gets every comment."""

from __future__ import annotations

from typing import ClassVar

from livecomments.brokers.base import OnReset
from livecomments.strategies.base import Deliver
from livecomments.strategies.pubsub import PubSubStrategy

CHANNEL = "lc:all"


class BroadcastStrategy(PubSubStrategy):
    """The simplest design and the most wasteful: the Hub discards (and counts) every
    comment for a video this process has no viewer of."""

    name: ClassVar[str] = "broadcast"

    def channel_of(self, video_id: str) -> str:
        return CHANNEL

    async def start(self, deliver: Deliver | None, on_reset: OnReset) -> None:
        await super().start(deliver, on_reset)
        if deliver is not None:  # a realtime process listens to everything, always
            await self._broker.subscribe(CHANNEL)
            self._metrics.subscriptions.set(1)

    async def watch(self, video_id: str) -> None:
        pass

    async def unwatch(self, video_id: str) -> None:
        pass
