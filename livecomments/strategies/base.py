"""The strategy seam: how a stored comment travels from a writer to the realtime processes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Protocol

from livecomments.brokers.base import OnReset
from livecomments.metrics import Metrics
from livecomments.model import Comment

if TYPE_CHECKING:
    from livecomments.config import Config

log = logging.getLogger(__name__)

Deliver = Callable[[Comment], None]  # hub.deliver: sync, on the loop, never blocks


class Strategy(Protocol):
    """Writer side: publish(). Realtime side: watch()/unwatch() from the Hub, and
    incoming comments fed to `deliver`. Delivery is at-most-once: the Hub repairs
    gaps from storage, so a strategy never retries or buffers for a viewer."""

    name: ClassVar[str]

    @property
    def ready(self) -> bool: ...

    @property
    def not_ready_reason(self) -> str: ...

    async def start(self, deliver: Deliver | None, on_reset: OnReset) -> None:
        """deliver is None on a writer-only process: it never listens."""
        ...

    async def publish(self, comment: Comment) -> None:
        """Best effort: the comment is already stored; failures are logged, not raised."""
        ...

    async def watch(self, video_id: str) -> None:
        """First local viewer of the video; returns once comments for it will arrive."""
        ...

    async def unwatch(self, video_id: str) -> None: ...

    async def close(self) -> None: ...


def decoder(deliver: Deliver, metrics: Metrics) -> Callable[[str, bytes], None]:
    """The broker's on_message: count what arrived, decode, hand to the hub."""
    received, received_bytes = metrics.received, metrics.received_bytes

    def on_message(channel: str, data: bytes) -> None:
        received.inc()
        received_bytes.inc(len(data))
        try:
            comment = Comment.from_json(data)
        except (ValueError, KeyError, TypeError):
            log.warning("dropped a malformed message on %s", channel)
            return
        deliver(comment)

    return on_message


def open_strategy(config: Config, metrics: Metrics) -> Strategy:
    from livecomments.brokers.base import open_broker

    if config.strategy == "broadcast":
        from livecomments.strategies.broadcast import BroadcastStrategy

        return BroadcastStrategy(open_broker(config.broker), metrics)
    if config.strategy == "partitioned":
        from livecomments.strategies.partitioned import PartitionedStrategy

        return PartitionedStrategy(open_broker(config.broker), metrics, config.partitions)
    if config.strategy == "dispatcher":
        from livecomments.strategies.dispatcher import DispatcherStrategy

        return DispatcherStrategy(config, metrics)
    raise ValueError(f"unknown strategy {config.strategy!r}")
