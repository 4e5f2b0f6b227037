"""In-process registry: one `both` process, nothing to lease (it dies with its registrations)."""

from __future__ import annotations

from livecomments.registry.base import OnChange, OnReset


class MemoryRegistry:
    """The one app's writer and realtime halves share this instance; nothing is global,
    so several apps in one test process stay apart."""

    def __init__(self, url: str, self_url: str, ttl: float = 0.0) -> None:
        self._url = self_url
        self._table: dict[str, set[str]] = {}
        self._counts: dict[str, int] = {}  # this process's viewers per video: the only process there is
        self._on_change: OnChange | None = None

    @property
    def ready(self) -> bool:
        return True

    @property
    def not_ready_reason(self) -> str:
        return ""

    async def start(self, on_change: OnChange | None, on_reset: OnReset) -> None:
        self._on_change = on_change

    async def register(self, video_id: str) -> None:
        self._table.setdefault(video_id, set()).add(self._url)
        self._changed(video_id)

    async def deregister(self, video_id: str) -> None:
        urls = self._table.get(video_id)
        if urls is not None:
            urls.discard(self._url)
            if not urls:
                del self._table[video_id]
        self._changed(video_id)

    def _changed(self, video_id: str) -> None:
        if self._on_change is not None:
            self._on_change(video_id)

    async def lookup(self, video_id: str) -> frozenset[str]:
        return frozenset(self._table.get(video_id, ()))

    async def put_counts(self, counts: dict[str, int]) -> None:
        for video_id, n in counts.items():
            if n:
                self._counts[video_id] = n
            else:
                self._counts.pop(video_id, None)

    async def counts(self, video_ids: list[str], *, others: bool) -> dict[str, int]:
        return {v: 0 if others else self._counts.get(v, 0) for v in video_ids}

    async def close(self) -> None:
        self._table.clear()
        self._counts.clear()
        self._on_change = None
