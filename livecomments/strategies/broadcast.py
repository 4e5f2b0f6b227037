"""Broadcast-all: one channel; every realtime process gets every comment."""

from __future__ import annotations

from typing import ClassVar

from livecomments.strategies.pubsub import PubSubStrategy

CHANNEL = "lc:all"


class BroadcastStrategy(PubSubStrategy):
    """The simplest design and the most wasteful: the Hub discards (and counts) every
    comment for a video this process has no viewer of.

    A realtime process holds the one channel for its whole life, so it may start before
    the broker: it is not ready (its streams are served from storage by the Hub) until
    the broker has confirmed it."""

    name: ClassVar[str] = "broadcast"
    held = (CHANNEL,)

    def channel_of(self, video_id: str) -> str:
        return CHANNEL

    async def watch(self, video_id: str) -> None:
        if not self._broker.ready:
            raise ConnectionError(self._broker.not_ready_reason)

    async def unwatch(self, video_id: str) -> None:
        pass
