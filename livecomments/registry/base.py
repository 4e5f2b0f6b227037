"""The dispatcher's registry seam: which realtime servers hold viewers of which video."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

OnChange = Callable[[str | None], None]  # a video's servers may have changed; None: any video's may have
OnReset = Callable[[], None]  # our lease was lost and is restored: pushes may have been missed meanwhile


class RegistryCounts(Protocol):
    """The registry's side of viewer counts (the dispatcher's ViewerCountExchange): each
    process's counts kept under its lease, so a dead process's stop counting with it."""

    async def put_counts(self, counts: dict[str, int]) -> None:
        """This process's viewers per video (0: none), in one write, under its lease: a dead
        process's counts stop counting when its lease runs out."""
        ...

    async def counts(self, video_ids: list[str], *, others: bool) -> dict[str, int]:
        """Each video's viewers summed over the live processes (`others`: except this one), in one read."""
        ...


class Registry(RegistryCounts, Protocol):
    """video -> advertised URLs of the live servers that registered it.

    Registrations live under one lease per process, kept alive by one heartbeat task
    (never one per video): a process that dies stops being returned by `lookup` within
    the lease TTL. `register` returns once a `lookup` by any process sees it, and every
    process started with an `on_change` is told (at most once per change, best effort)
    that the video's servers changed; after its change feed reconnects it gets
    `on_change(None)`, because changes may have been missed while it was down.
    """

    @property
    def ready(self) -> bool:
        """False while the lease or the change feed is lost (readiness)."""
        ...

    @property
    def not_ready_reason(self) -> str: ...

    async def start(self, on_change: OnChange | None, on_reset: OnReset) -> None:
        """on_change is None in a process that never looks up (realtime only)."""
        ...

    async def register(self, video_id: str) -> None: ...
    async def deregister(self, video_id: str) -> None: ...
    async def lookup(self, video_id: str) -> frozenset[str]: ...
    async def close(self) -> None: ...
