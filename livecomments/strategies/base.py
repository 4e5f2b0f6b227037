"""The strategy seam: how a stored comment travels from a writer to the realtime processes,
and how the realtime processes learn each other's viewer counts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from livecomments.brokers.base import OnReset
from livecomments.metrics import Metrics
from livecomments.model import Comment

log = logging.getLogger(__name__)

Deliver = Callable[[Comment], None]  # hub.deliver: sync, on the loop, never blocks
# (server, video -> its local viewers there, 0: none left; videos it asks the others to re-send):
# another realtime process's counts, on the loop (livecomments/core/counts.py)
OnCounts = Callable[[str, dict[str, int], list[str]], None]


@dataclass(frozen=True, slots=True)
class CountsShare:
    """One viewers_interval's worth of this process's viewer counts (core/counts.py)."""

    server: str  # this process, as the others know its counts (a new one per process start)
    changed: dict[str, int]  # local counts that changed, or are due again (0: none left here)
    fresh: list[str] = field(default_factory=list)  # videos just started watching: the others send theirs again
    watched: list[str] = field(default_factory=list)  # every video watched here: whose totals to return
    ttl: float = 0.0  # seconds a count lasts unless shared again (a crashed process's expire)


class ViewerCountExchange(Protocol):
    """How realtime processes learn each other's viewer counts, and anyone a video's total.
    Best effort: a count lost on the way is sent again within a few intervals."""

    async def share_counts(self, share: CountsShare) -> dict[str, int] | None:
        """Realtime side, once per viewers_interval, from one task. Returns the other processes'
        total per video of `share.watched` where the strategy reads them (a registry), or None
        where they arrive through `on_counts` (pub/sub). Raises if the counts could not be shared."""
        ...

    async def count_viewers(self, video_id: str) -> int | None:
        """The video's viewers on every realtime process, for GET /v1/videos/{id} on any role
        (a writer too); None where the strategy keeps no shared count (the in-memory broker:
        one process, whose Hub knows)."""
        ...


class Strategy(ViewerCountExchange, Protocol):
    """Writer side: publish(). Realtime side: watch()/unwatch() from the Hub, and every
    comment that reaches this process handed to `deliver` through the strategy's Inbox (the
    one place it is counted as received). Delivery is at-most-once: the Hub repairs gaps
    from storage, so a strategy never retries or buffers for a viewer."""

    name: ClassVar[str]

    @property
    def ready(self) -> bool: ...

    @property
    def not_ready_reason(self) -> str: ...

    async def start(self, deliver: Deliver | None, on_reset: OnReset, on_counts: OnCounts | None = None) -> None:
        """deliver is None on a writer-only process: it never listens. on_counts receives the
        other realtime processes' viewer counts, where the strategy carries them (pub/sub)."""
        ...

    def receive(self, comments: Sequence[Comment], size: int) -> None:
        """Realtime side, on the loop, never awaits: `size` bytes carrying `comments` reached
        this process by a way the strategy's own listener does not see (a dispatcher push,
        authenticated and parsed by the HTTP edge). Counted and delivered through the Inbox,
        like everything the strategy receives; dropped on a process that does not listen."""
        ...

    async def publish(self, comment: Comment) -> None:
        """Best effort, and returns without waiting for the network (a post's 201 never
        waits for the broker or the registry): queued, sent in the background in the order
        of the calls. The comment is already stored; what is lost, realtime processes
        read back from storage (their head check). Failures are logged, not raised."""
        ...

    async def watch(self, video_id: str) -> None:
        """First local viewer of the video; returns once comments for it will arrive, or
        raises (the Hub then serves the video from storage and retries). Never called
        concurrently with watch or unwatch of the same video."""
        ...

    async def unwatch(self, video_id: str) -> None:
        """Undoes a watch that returned; raises if it could not (the Hub retries)."""
        ...

    async def close(self) -> None: ...


class Inbox:
    """The one way from a strategy's transports into the Hub: a broker message (`on_message`),
    a dispatcher push or a writer's comment to its own realtime half (`take`). What reached
    this process is counted here, and only here (received, received_bytes), then handed to
    `deliver` (Hub.deliver: the sequencer, the one door into fan-out), in order, on the loop."""

    __slots__ = ("_deliver", "_received", "_received_bytes")

    def __init__(self, deliver: Deliver, metrics: Metrics) -> None:
        self._deliver = deliver
        self._received = metrics.received
        self._received_bytes = metrics.received_bytes

    def take(self, comments: Sequence[Comment], size: int) -> None:
        """`size` bytes carrying `comments` arrived: count them, deliver each. Never awaits."""
        self._received.inc(len(comments))
        self._received_bytes.inc(size)
        deliver = self._deliver
        for comment in comments:
            deliver(comment)

    def on_message(self, channel: str, data: bytes) -> None:
        """A broker's on_message for comment channels: decode one comment, take it. A malformed
        message is not a comment: its bytes are counted, it is logged and dropped."""
        try:
            comments: tuple[Comment, ...] = (Comment.from_json(data),)
        except (ValueError, KeyError, TypeError):
            log.warning("dropped a malformed message on %s", channel)
            comments = ()
        self.take(comments, len(data))
