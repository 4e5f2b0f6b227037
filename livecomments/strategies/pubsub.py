"""What the two pub/sub strategies share: a broker, best-effort publish, readiness, and
viewer counts carried on the videos' own channels.

A counts message is `COUNTS` + JSON `{"s": server, "n": {video: count}, "a": [video...]}`:
the local counts of one realtime process for the videos of one channel, and the videos it
asks about. It goes where the video's comments go (a partition, a video's own channel, a
Redis Cluster shard), so only the processes watching those videos receive it. A writer hears
no channel: it reads the counts the realtime processes also put in a CountsStore beside the
broker (brokers/redis_counts.py), where there is one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import orjson

from livecomments.brokers.base import Broker, CountsStore, OnReset
from livecomments.metrics import Metrics
from livecomments.model import Comment
from livecomments.strategies.base import CountsShare, Deliver, Inbox, OnCounts

log = logging.getLogger(__name__)

COUNTS = b"#viewers "  # never the start of a comment (JSON)


def _listener(inbox: Inbox, on_counts: OnCounts | None) -> Callable[[str, bytes], None]:
    """The broker's on_message: counts to on_counts (never counted as received comments), the rest to the inbox."""
    comments = inbox.on_message

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
    `held` channels for the life of a realtime process, others in watch(). `counts`: where
    the realtime processes also keep their counts for the writers (None: nowhere, the
    in-memory broker's one process knows them)."""

    held: tuple[str, ...] = ()

    def __init__(self, broker: Broker, metrics: Metrics, counts: CountsStore | None = None) -> None:
        self._broker = broker
        self._metrics = metrics
        self._counts = counts
        self._inbox: Inbox | None = None

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
        self._inbox = Inbox(deliver, self._metrics)
        await self._broker.start(_listener(self._inbox, on_counts), on_reset, self.held)
        self._metrics.subscriptions.set(len(self.held))

    def receive(self, comments: Sequence[Comment], size: int) -> None:
        if self._inbox is not None:
            self._inbox.take(comments, size)

    async def publish(self, comment: Comment) -> None:
        """The broker queues it (Redis) or delivers it in-process (memory): never waits."""
        try:
            await self._broker.publish(self.channel_of(comment.video_id), comment.to_json())
        except Exception as e:  # stored already; realtime processes repair the gap
            log.warning("publish of %s/%d failed: %s", comment.video_id, comment.seq, e)

    async def share_counts(self, share: CountsShare) -> dict[str, int] | None:
        """One message per channel, however many of its videos changed: queued, never waited on.
        The same counts go to the counts store too (one pipeline), for writers to read."""
        by_channel: dict[str, tuple[dict[str, int], list[str]]] = {}
        for video_id, n in share.changed.items():
            by_channel.setdefault(self.channel_of(video_id), ({}, []))[0][video_id] = n
        for video_id in share.fresh:
            by_channel.setdefault(self.channel_of(video_id), ({}, []))[1].append(video_id)
        for channel, (counts, ask) in by_channel.items():
            await self._broker.publish(channel, COUNTS + orjson.dumps({"s": share.server, "n": counts, "a": ask}))
        if share.changed and self._counts is not None:
            await self._counts.put(share.server, share.changed, share.ttl)
        return None

    async def count_viewers(self, video_id: str) -> int | None:
        return None if self._counts is None else await self._counts.total(video_id)

    async def close(self) -> None:
        await self._broker.close()
        if self._counts is not None:
            await self._counts.close()
