"""What the two pub/sub strategies share: a broker, best-effort publish, readiness, and
viewer counts carried on the videos' own channels.

A counts message is `COUNTS` + JSON `{"s": server, "n": {video: count}, "a": [video...]}`:
the local counts of one realtime process for the videos of one channel, and the videos it
asks about. It goes where the video's comments go (a partition, a video's own channel, a
Redis Cluster shard), so only the processes watching those videos receive it. A writer hears
no channel: it reads the counts the broker also keeps (brokers/redis_counts.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson

from livecomments.brokers.base import Broker, OnReset
from livecomments.metrics import Metrics
from livecomments.model import Comment
from livecomments.strategies.base import Deliver, OnCounts, decoder

log = logging.getLogger(__name__)

COUNTS = b"#viewers "  # never the start of a comment (JSON)


def _listener(deliver: Deliver, on_counts: OnCounts | None, metrics: Metrics) -> Callable[[str, bytes], None]:
    """The broker's on_message: counts to on_counts (never counted as received comments), the rest decoded."""
    comments = decoder(deliver, metrics)

    def on_message(channel: str, data: bytes) -> None:
        if not data.startswith(COUNTS):
            comments(channel, data)
            return
        if on_counts is not None:
            try:
                msg = orjson.loads(data[len(COUNTS) :])
                on_counts(msg["s"], msg["n"], msg["a"])
            except (ValueError, KeyError, TypeError):
                log.warning("dropped a malformed counts message on %s", channel)

    return on_message


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

    async def start(self, deliver: Deliver | None, on_reset: OnReset, on_counts: OnCounts | None = None) -> None:
        if deliver is None:
            await self._broker.start(None, on_reset)
            return
        await self._broker.start(_listener(deliver, on_counts, self._metrics), on_reset, self.held)
        self._metrics.subscriptions.set(len(self.held))

    async def publish(self, comment: Comment) -> None:
        """The broker queues it (Redis) or delivers it in-process (memory): never waits."""
        try:
            await self._broker.publish(self.channel_of(comment.video_id), comment.to_json())
        except Exception as e:  # stored already; realtime processes repair the gap
            log.warning("publish of %s/%d failed: %s", comment.video_id, comment.seq, e)

    async def share_counts(
        self, server: str, changed: dict[str, int], fresh: list[str], watched: list[str], ttl: float,
    ) -> dict[str, int] | None:
        """One message per channel, however many of its videos changed: queued, never waited on.
        The same counts go to the broker's store too (one pipeline), for writers to read."""
        by_channel: dict[str, tuple[dict[str, int], list[str]]] = {}
        for video_id, n in changed.items():
            by_channel.setdefault(self.channel_of(video_id), ({}, []))[0][video_id] = n
        for video_id in fresh:
            by_channel.setdefault(self.channel_of(video_id), ({}, []))[1].append(video_id)
        for channel, (counts, ask) in by_channel.items():
            await self._broker.publish(channel, COUNTS + orjson.dumps({"s": server, "n": counts, "a": ask}))
        if changed:
            await self._broker.put_counts(server, changed, ttl)
        return None

    async def count_viewers(self, video_id: str) -> int | None:
        return await self._broker.count(video_id)

    async def close(self) -> None:
        await self._broker.close()
