"""The head check: what a realtime process did not receive is found even when no later
comment reveals it.

Every `repair_interval`, one batched storage call reads the heads of the videos a lost
comment could hide in; a video whose head is past what this process delivered lost
something (the broker, a push, a writer's publish queue, a killed writer) and is repaired
(core/sequencer.py: one read per video, not per viewer). The same check polls storage for
the videos the strategy cannot deliver now (broker link down, registry lease lost), and its
tick is when failed watches are retried.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from livecomments.core.video import Video, Videos
from livecomments.storage.base import Storage
from livecomments.strategies.base import Strategy

log = logging.getLogger(__name__)

ACTIVE_TICKS = 15  # a video with a comment or a join within this many head-check ticks is checked every tick
SWEEP_TICKS = 10  # and every video on every this-many-th tick, so a quiet video's lost comment is found too


class Feed(Protocol):
    """The video's ordered feed (core/sequencer.py Sequencer)."""

    def position(self, video: Video) -> int | None: ...
    def repairing(self, video: Video) -> bool: ...
    def repair(self, video: Video) -> None: ...


class Watches(Protocol):
    """The videos' lifecycle (core/lifecycle.py Lifecycle)."""

    def watched(self, video: Video) -> bool: ...
    def retry_watches(self) -> None: ...


class HeadCheck:
    """Runs on the loop: one timer, and at most one storage call in flight (a slow storage
    is not piled on)."""

    def __init__(
        self, videos: Videos, storage: Storage, strategy: Strategy, feed: Feed, watches: Watches,
        interval: float,
    ) -> None:
        self._videos = videos
        self._storage = storage
        self._strategy = strategy
        self._feed = feed
        self._watches = watches
        self._interval = interval
        self._timer: asyncio.TimerHandle | None = None
        self._check: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._on_tick)

    def stop(self) -> list[asyncio.Task[None]]:
        """Stop the timer and cancel a check in flight; the caller awaits the tasks returned."""
        if self._timer is not None:
            self._timer.cancel()
        if self._check is None:
            return []
        self._check.cancel()
        return [self._check]

    def _on_tick(self) -> None:
        tick = self._videos.advance()
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._on_tick)
        self._watches.retry_watches()
        if self._check is None:
            due = self._due(tick)
            if due:
                self._check = asyncio.create_task(self._check_heads(due))

    def _due(self, tick: int) -> list[str]:
        """Videos a lost comment could hide in: every one while the strategy cannot deliver
        (degraded) or on every SWEEP_TICKS-th tick, else those not watched or active within
        ACTIVE_TICKS (a comment arrived, a viewer joined). Videos being repaired look anyway."""
        everything = not self._strategy.ready or tick % SWEEP_TICKS == 0
        recent = tick - ACTIVE_TICKS
        feed, watches = self._feed, self._watches
        return [
            v.video_id for v in self._videos
            if feed.position(v) is not None and not feed.repairing(v)
            and (everything or not watches.watched(v) or v.touched >= recent)
        ]

    async def _check_heads(self, video_ids: list[str]) -> None:
        """One storage call for every due video; a video whose head is past what this
        process delivered lost something: repair it."""
        try:
            heads = await self._storage.last_seqs(video_ids)
        except Exception as e:
            log.warning("head check of %d videos failed: %s", len(video_ids), e)
            return
        finally:
            self._check = None
        for video_id, head in heads.items():
            video = self._videos.get(video_id)
            if video is None:
                continue
            last = self._feed.position(video)
            if last is not None and head > last:
                self._feed.repair(video)
