"""The broker seam: topic pub/sub between writer and realtime processes; and the store of
viewer counts that may sit beside a broker, for the processes that hear no channel."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

OnMessage = Callable[[str, bytes], None]  # sync; runs on the loop; must not await or block
OnReset = Callable[[], None]  # the link was lost and is back: messages may have been lost


class Broker(Protocol):
    """At-most-once, FIFO per channel, no history.

    `subscribe` returns once the broker has confirmed, so a message published after it
    returns is delivered (unless the link drops). After a reconnect the broker
    resubscribes to every channel it holds, then calls on_reset.
    """

    @property
    def ready(self) -> bool:
        """True while the link works (readiness)."""
        ...

    @property
    def not_ready_reason(self) -> str: ...

    async def start(self, on_message: OnMessage | None, on_reset: OnReset, held: Iterable[str] = ()) -> None:
        """on_message None: a publish-only process (a writer), which holds no subscriber link.
        Otherwise the link is opened now, so readiness tracks it before the first subscribe.
        `held`: channels subscribed for the life of the process, from the first session on
        (however late the broker comes up); the broker is not ready until they are confirmed."""
        ...
    async def publish(self, channel: str, data: bytes) -> None: ...
    async def subscribe(self, *channels: str) -> None: ...
    async def unsubscribe(self, *channels: str) -> None: ...

    async def close(self) -> None: ...


class CountsStore(Protocol):
    """Viewer counts per (video, process), each expiring unless written again: what pub/sub
    realtime processes tell each other on the channels, kept where a writer, which hears no
    channel, can read a video's total. Best effort; the last write of a process wins."""

    async def put(self, server: str, counts: dict[str, int], ttl: float) -> None:
        """Realtime side: `server`'s viewers per video, for ttl seconds unless written again
        (0: none there any more), in one round trip. Raises if they could not be written."""
        ...

    async def total(self, video_id: str) -> int:
        """The video's viewers summed over the processes whose count has not expired."""
        ...

    async def close(self) -> None: ...
