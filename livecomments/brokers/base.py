"""The broker seam: topic pub/sub between writer and realtime processes."""

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

    async def put_counts(self, server: str, counts: dict[str, int], ttl: float) -> None:
        """Realtime side: keep this process's viewer counts where count() finds them, for ttl
        seconds unless written again (0: gone). For the processes that hear no channel."""
        ...

    async def count(self, video_id: str) -> int | None:
        """The video's viewers summed over the processes' fresh counts; None: not kept here."""
        ...

    async def close(self) -> None: ...
