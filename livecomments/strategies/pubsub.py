"""What the two pub/sub strategies share: a broker, best-effort publish, readiness."""

from __future__ import annotations

import logging

from livecomments.brokers.base import Broker, OnReset
from livecomments.metrics import Metrics
from livecomments.model import Comment
from livecomments.strategies.base import Deliver, decoder

log = logging.getLogger(__name__)


class PubSubStrategy:
    """Subclasses name the channel of a video and decide what to subscribe to:
    `held` channels for the life of a realtime process, others in watch()."""

    held: tuple[str, ...] = ()

    def __init__(self, broker: Broker, metrics: Metrics) -> None:
        self._broker = broker
        self._metrics = metrics

    def channel_of(self, video_id: str) -> str:
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        return self._broker.ready

    @property
    def not_ready_reason(self) -> str:
        return self._broker.not_ready_reason

    async def start(self, deliver: Deliver | None, on_reset: OnReset) -> None:
        if deliver is None:
            await self._broker.start(None, on_reset)
            return
        await self._broker.start(decoder(deliver, self._metrics), on_reset, self.held)
        self._metrics.subscriptions.set(len(self.held))

    async def publish(self, comment: Comment) -> None:
        try:
            await self._broker.publish(self.channel_of(comment.video_id), comment.to_json())
        except Exception as e:  # stored already; realtime processes repair the gap
            log.warning("publish of %s/%d failed: %s", comment.video_id, comment.seq, e)

    async def close(self) -> None:
        await self._broker.close()
