"""The strategy seam: how a stored comment travels from a writer to the realtime processes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ClassVar, Protocol

from livecomments.brokers.base import OnReset
from livecomments.metrics import Metrics
from livecomments.model import Comment

log = logging.getLogger(__name__)

Deliver = Callable[[Comment], None]  # hub.deliver: sync, on the loop, never blocks
# (server, video -> its local viewers there, 0: none left; videos it asks the others to re-send):
# another realtime process's counts, on the loop (livecomments/core/counts.py)
OnCounts = Callable[[str, dict[str, int], list[str]], None]


class Strategy(Protocol):
    """Writer side: publish(). Realtime side: watch()/unwatch() from the Hub, and
    incoming comments fed to `deliver`. Delivery is at-most-once: the Hub repairs
    gaps from storage, so a strategy never retries or buffers for a viewer."""

    name: ClassVar[str]

    @property
    def ready(self) -> bool: ...

    @property
    def not_ready_reason(self) -> str: ...

    async def start(self, deliver: Deliver | None, on_reset: OnReset, on_counts: OnCounts | None = None) -> None:
        """deliver is None on a writer-only process: it never listens. on_counts receives the
        other realtime processes' viewer counts, where the strategy carries them (pub/sub)."""
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

    async def share_counts(
        self, server: str, changed: dict[str, int], fresh: list[str], watched: list[str], ttl: float,
    ) -> dict[str, int] | None:
        """Realtime side, once per viewers_interval, from one task: this process's local
        viewer counts that changed (0: none left here), and the videos it has just started
        watching (`fresh`: the others send theirs again); a count not shared again within
        `ttl` seconds is gone (the process crashed), where the strategy expires them. Returns the other processes' total
        per video of `watched` where the strategy reads them (a registry), or None where they
        arrive through on_counts (pub/sub). Raises if the counts could not be shared."""
        ...

    async def count_viewers(self, video_id: str) -> int | None:
        """The video's viewers on every realtime process, for GET /v1/videos/{id} on any role
        (a writer too); None where the strategy keeps no shared count (the in-memory broker:
        one process, whose Hub knows)."""
        ...

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
