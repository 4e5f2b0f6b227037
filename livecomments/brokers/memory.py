"""In-process broker: a real implementation for the single-process `both` role."""

from __future__ import annotations

from collections.abc import Iterable

from livecomments.brokers.base import OnMessage, OnReset


class MemoryBroker:
    """Delivers synchronously inside publish(): at-most-once holds trivially, nothing is queued."""

    def __init__(self, url: str = "memory://") -> None:
        self._channels: set[str] = set()
        self._on_message: OnMessage | None = None

    @property
    def ready(self) -> bool:
        return True

    @property
    def not_ready_reason(self) -> str:
        return ""

    async def start(self, on_message: OnMessage | None, on_reset: OnReset, held: Iterable[str] = ()) -> None:
        self._on_message = on_message
        self._channels.update(held)

    async def publish(self, channel: str, data: bytes) -> None:
        if self._on_message is not None and channel in self._channels:
            self._on_message(channel, data)

    async def subscribe(self, *channels: str) -> None:
        self._channels.update(channels)

    async def unsubscribe(self, *channels: str) -> None:
        self._channels.difference_update(channels)

    async def close(self) -> None:
        self._channels.clear()
        self._on_message = None
