"""The Hub's storage side of delivery: what a realtime process did not receive is read back.

A seq jump is repaired at once; a periodic head check (every `repair_interval`, one batched
storage call) finds what no later comment revealed: the last comment of a burst lost by the
broker, by a push, or in a writer's publish queue. The same check polls storage for videos
the strategy cannot deliver now (broker link down, registry lease lost). One repair per
video at a time, not one per viewer; comments arriving meanwhile are held, then drained in
seq order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from livecomments.core.video import VideoState
from livecomments.core.viewer import Frame, build_frame
from livecomments.metrics import Metrics
from livecomments.storage.base import Storage
from livecomments.strategies.base import Strategy

log = logging.getLogger(__name__)

REPAIR_RETRY = 1.0  # seconds between storage reads while a gap cannot be repaired
ACTIVE_TICKS = 15  # a video with a comment or a join within this many head-check ticks is checked every tick
SWEEP_TICKS = 10  # and every video on every this-many-th tick, so a quiet video's lost comment is found too


class Repairs:
    """Mixed into the Hub, whose state and delivery it uses; runs on the loop."""

    _videos: dict[str, VideoState]
    _storage: Storage
    _strategy: Strategy
    _metrics: Metrics
    _backlog_limit: int
    _repair_interval: float
    _tick: int
    _checker: asyncio.TimerHandle | None
    _check: asyncio.Task[None] | None
    _emit: Callable[[VideoState, Frame, float], None]
    _drain: Callable[[str, VideoState], None]

    def resync(self) -> None:
        """The broker link or the registry lease came back: anything may have been lost
        while it was down, and a video served from storage can be watched again."""
        for video_id, state in self._videos.items():
            state.wake.set()
            if state.last_seq is not None:  # else still joining: its head is read after the watch
                self._start_repair(video_id, state)

    def _start_repair(self, video_id: str, state: VideoState) -> None:
        if state.repair is None:
            state.repair = asyncio.create_task(self._repair(video_id, state))
        else:  # a running repair may have read storage before what made us look
            state.rescan = True

    # -- the head check --------------------------------------------------

    def _on_tick(self) -> None:
        self._tick += 1
        self._checker = asyncio.get_running_loop().call_later(self._repair_interval, self._on_tick)
        if self._strategy.ready:  # a watch that failed is tried again: one timer for all, not one per video
            for state in self._videos.values():
                if not state.watched and state.viewers:
                    state.wake.set()
        if self._check is None:  # one batched read at a time: a slow storage is not piled on
            due = self._due()
            if due:
                self._check = asyncio.create_task(self._check_heads(due))

    def _due(self) -> list[str]:
        """Videos a lost comment could hide in: every one while the strategy cannot deliver
        (degraded) or on every SWEEP_TICKS-th tick, else those not watched or active within
        ACTIVE_TICKS (a comment arrived, a viewer joined). Videos being repaired look anyway."""
        everything = not self._strategy.ready or self._tick % SWEEP_TICKS == 0
        recent = self._tick - ACTIVE_TICKS
        return [
            video_id for video_id, s in self._videos.items()
            if s.last_seq is not None and s.repair is None and (everything or not s.watched or s.touched >= recent)
        ]

    async def _check_heads(self, video_ids: list[str]) -> None:
        """One storage call for every due video; a video whose head is past what this
        process delivered lost something (broker, push, publisher queue): repair it."""
        try:
            heads = await self._storage.last_seqs(video_ids)
        except Exception as e:
            log.warning("head check of %d videos failed: %s", len(video_ids), e)
            return
        finally:
            self._check = None
        for video_id, head in heads.items():
            state = self._videos.get(video_id)
            if state is not None and state.last_seq is not None and head > state.last_seq:
                self._start_repair(video_id, state)

    async def _repair(self, video_id: str, state: VideoState) -> None:
        """One catch-up per video (not per viewer): read what is missing, then drain.
        A failed read is retried, so held comments never wait for a later comment."""
        while True:
            try:
                await self._catch_up(video_id, state)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("repair of %s failed, retrying: %s", video_id, e)
                await asyncio.sleep(REPAIR_RETRY)
                continue
            if not state.rescan:
                break
            state.rescan = False
        state.repair = None
        self._drain(video_id, state)

    async def _catch_up(self, video_id: str, state: VideoState) -> None:
        while True:
            assert state.last_seq is not None
            before = state.last_seq
            held_before = {c.seq for c in state.held}  # committed before the read below began
            missing = await self._storage.since(video_id, before, self._backlog_limit)
            arrived = {c.seq for c in state.held}  # came by the broker: not a repair
            for comment in missing:
                if comment.seq == state.last_seq + 1:
                    if comment.seq not in arrived:
                        self._metrics.gaps_repaired.inc()
                    state.last_seq = comment.seq
                    self._emit(state, build_frame(comment), comment.created_at)
            if len(missing) == self._backlog_limit:
                continue
            pending = [c.seq for c in state.held if c.seq > state.last_seq]
            if pending and min(pending) > state.last_seq + 1:
                # seq is assigned under the video's head lock, so a read that began after a comment
                # was committed holds every seq below it, unless retention removed them: only then
                # skip. A comment that arrived during the read may be newer than its snapshot: read again.
                if state.last_seq == before and min(pending) in held_before:  # storage lacks them: go on, say so
                    log.warning("%s: seq %d..%d not in storage", video_id, before + 1, min(pending) - 1)
                    state.last_seq = min(pending) - 1
                continue
            return
