"""The realtime side's local fan-out: video -> viewers, seq tracking, gap repair.

Framework-free: a Viewer holds an asyncio transport, never an aiohttp response.
The hot path (`Hub.deliver`) runs synchronously in whatever task the strategy
calls it from; it encodes a comment's frame once and hands the same bytes to
every viewer's transport. It never awaits, so a slow viewer cannot hold it.

Batching (`batch_ms`): a video's comments within one window go out as one write per
viewer. Fixed mode holds every comment up to a window; adaptive mode holds only hot
videos, whose viewers × comments/s reaches `batch_hot` (where a write per comment per
viewer would cost real CPU); a quiet video's comment is written at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence

from livecomments import sse
from livecomments.metrics import Metrics
from livecomments.model import Comment
from livecomments.storage.base import Storage
from livecomments.strategies.base import Strategy
from livecomments.viewer import NOT_LIVE, Frame, Viewer, build_frame

log = logging.getLogger(__name__)

REPAIR_RETRY = 1.0  # seconds between storage reads while a gap cannot be repaired


class VideoState:
    __slots__ = ("viewers", "last_seq", "held", "ready", "repair", "rescan", "linger", "pending", "flush",
                 "rate_start", "rate_count", "last_rate")

    def __init__(self) -> None:
        self.viewers: set[Viewer] = set()
        self.last_seq: int | None = None  # None until watched and the head is known
        self.held: list[Comment] = []  # arrived while initialising or repairing
        self.ready: asyncio.Task[None] | None = None
        self.repair: asyncio.Task[None] | None = None
        self.rescan = False  # the broker reconnected during a repair: read storage once more
        self.linger: asyncio.TimerHandle | None = None
        self.pending: list[tuple[Frame, float]] = []  # in seq order, waiting for the batch window
        self.flush: asyncio.TimerHandle | None = None
        self.rate_start = -1e9  # adaptive batching: the video's comments per second
        self.rate_count = 0
        self.last_rate = 0


class Hub:
    def __init__(
        self, storage: Storage, strategy: Strategy, metrics: Metrics, *,
        backlog_limit: int, linger: float, ping_interval: float,
        batch_ms: float = 0.0, batch_adaptive: bool = False, batch_hot: int = 10_000,
    ) -> None:
        self._storage = storage
        self._strategy = strategy
        self._metrics = metrics
        self._backlog_limit = backlog_limit
        self._linger = linger
        self._ping_interval = ping_interval
        self._videos: dict[str, VideoState] = {}
        self._reads: dict[tuple[str, int], asyncio.Task[list[Frame]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pinger: asyncio.TimerHandle | None = None
        self._window = batch_ms / 1000
        self._adaptive = batch_adaptive
        self._hot = batch_hot

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._pinger = loop.call_later(self._ping_interval, self._ping)

    def close_viewers(self) -> None:
        """Shutdown: send what batching still holds, then end every stream cleanly."""
        for state in self._videos.values():
            if state.flush is not None:
                state.flush.cancel()
                self._flush(state)
            for viewer in state.viewers:
                viewer.drop("shutdown")

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        self.close_viewers()
        for state in self._videos.values():
            for timer in (state.linger, state.flush):
                if timer is not None:
                    timer.cancel()
            for task in (state.ready, state.repair):
                if task is not None:
                    task.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ping(self) -> None:
        """One timer per process keeps every idle stream alive through proxies."""
        chunk = sse.chunk(sse.PING)
        for state in self._videos.values():
            for viewer in state.viewers:
                if viewer.after != NOT_LIVE:
                    viewer.write(chunk if viewer.chunked else sse.PING)
        self._pinger = asyncio.get_running_loop().call_later(self._ping_interval, self._ping)

    # -- viewers ---------------------------------------------------------

    async def join(self, viewer: Viewer) -> int:
        """Register a viewer (it holds live frames) and return the video's current seq.
        Returns once the strategy delivers this video here; raises if it cannot."""
        state = self._videos.get(viewer.video_id)
        if state is None:
            state = self._videos[viewer.video_id] = VideoState()
            state.ready = asyncio.create_task(self._watch(viewer.video_id, state))
            self._metrics.watched_videos.inc()
        elif state.linger is not None:
            state.linger.cancel()
            state.linger = None
        state.viewers.add(viewer)
        self._metrics.connections.inc()
        try:
            assert state.ready is not None
            await asyncio.shield(state.ready)
        except BaseException:
            self.leave(viewer)
            raise
        assert state.last_seq is not None
        return state.last_seq

    def leave(self, viewer: Viewer) -> None:
        state = self._videos.get(viewer.video_id)
        if state is None or viewer not in state.viewers:
            return
        state.viewers.discard(viewer)
        self._metrics.connections.dec()
        if viewer.dropped == "slow":
            self._metrics.slow_disconnects.inc()
        if not state.viewers:
            if state.ready is not None and state.ready.done() and state.ready.exception() is None:
                loop = asyncio.get_running_loop()
                state.linger = loop.call_later(self._linger, self._expire, viewer.video_id, state)
            else:  # the watch failed or is still running: nothing to linger over
                self._forget(viewer.video_id, state)

    def _expire(self, video_id: str, state: VideoState) -> None:
        if self._videos.get(video_id) is state and not state.viewers:
            self._forget(video_id, state)

    def _forget(self, video_id: str, state: VideoState) -> None:
        del self._videos[video_id]
        self._metrics.watched_videos.dec()
        if state.repair is not None:
            state.repair.cancel()
        if state.flush is not None:
            state.flush.cancel()
        ready = state.ready
        if ready is not None and not ready.done():
            ready.cancel()  # _watch rolls back what it had done
        elif ready is not None and not ready.cancelled() and ready.exception() is None:
            self._spawn(self._unwatch(video_id))

    async def _watch(self, video_id: str, state: VideoState) -> None:
        await self._strategy.watch(video_id)
        try:
            state.last_seq = await self._storage.last_seq(video_id)
        except BaseException:
            self._spawn(self._unwatch(video_id))
            raise
        self._drain(video_id, state)

    async def _unwatch(self, video_id: str) -> None:
        try:
            await self._strategy.unwatch(video_id)
        except Exception as e:
            log.warning("unwatch %s failed: %s", video_id, e)

    # -- delivery --------------------------------------------------------

    def deliver(self, comment: Comment) -> None:
        """Called by the strategy on the loop. Never awaits: O(viewers) transport writes."""
        state = self._videos.get(comment.video_id)
        if state is None:
            self._metrics.discarded.inc()
            return
        if state.last_seq is None or state.repair is not None:
            state.held.append(comment)
            return
        self._apply(comment.video_id, state, comment)

    def _apply(self, video_id: str, state: VideoState, comment: Comment) -> None:
        assert state.last_seq is not None
        if comment.seq <= state.last_seq:
            return  # a duplicate (repair and broker both brought it)
        if comment.seq > state.last_seq + 1:  # the broker dropped something: read it back
            state.held.append(comment)
            state.repair = asyncio.create_task(self._repair(video_id, state))
            return
        state.last_seq = comment.seq
        self._emit(state, build_frame(comment), comment.created_at)

    def _emit(self, state: VideoState, frame: Frame, created_at: float) -> None:
        """Write now, or join the video's batch window (frames stay in seq order either way)."""
        window = self._window
        hold = bool(window) and (not self._adaptive or self._is_hot(state))  # counts every comment
        if state.flush is not None:
            state.pending.append((frame, created_at))
            return
        if hold:
            state.pending.append((frame, created_at))
            state.flush = asyncio.get_running_loop().call_later(window, self._flush, state)
            return
        self._fanout(state, [frame], (created_at,))

    def _is_hot(self, state: VideoState) -> bool:
        """Adaptive batching: is viewers × comments/s at least `batch_hot`? The rate is the
        larger of the last full second's count and the current second's count so far."""
        now = asyncio.get_running_loop().time()
        if now - state.rate_start >= 1.0:
            state.last_rate = state.rate_count if now - state.rate_start < 2.0 else 0
            state.rate_start, state.rate_count = now, 0
        state.rate_count += 1
        return len(state.viewers) * max(state.last_rate, state.rate_count) >= self._hot

    def _flush(self, state: VideoState) -> None:
        pending, state.pending, state.flush = state.pending, [], None
        self._fanout(state, [frame for frame, _ in pending], [created for _, created in pending])

    def _fanout(self, state: VideoState, frames: list[Frame], created: Sequence[float]) -> None:
        """One write per viewer for all the frames, encoded (joined, chunked) once for all."""
        plain = frames[0][1] if len(frames) == 1 else b"".join(frame[1] for frame in frames)
        chunked = sse.chunk(plain)
        first = frames[0][0]
        for viewer in state.viewers:
            if viewer.after < first:  # the hot path: live, and these frames are new to it
                viewer.write(chunked if viewer.chunked else plain)
            else:
                viewer.offer(frames)
        n = len(state.viewers)
        if n:
            self._metrics.delivered.inc(n * len(frames))
            # One observation per comment: every viewer was written in this same instant.
            now = time.time()
            for created_at in created:
                self._metrics.latency.observe(max(0.0, now - created_at))

    def _drain(self, video_id: str, state: VideoState) -> None:
        held, state.held = sorted(state.held, key=lambda c: c.seq), []
        for i, comment in enumerate(held):
            self._apply(video_id, state, comment)
            if state.repair is not None:  # a gap: the rest waits for the repair
                state.held.extend(held[i + 1 :])
                return

    def resync(self) -> None:
        """The broker link came back: anything may have been lost while it was down."""
        for video_id, state in self._videos.items():
            if state.last_seq is None:
                continue  # still joining: its head is read after the subscription
            if state.repair is None:
                state.repair = asyncio.create_task(self._repair(video_id, state))
            else:  # a running repair may have read storage before the outage ended
                state.rescan = True

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
                if state.last_seq == before:  # storage lacks it too: go on, say so
                    log.warning("%s: seq %d..%d not in storage", video_id, before + 1, min(pending) - 1)
                    state.last_seq = min(pending) - 1
                continue
            return

    # -- resume ----------------------------------------------------------

    async def read_since(self, video_id: str, seq: int) -> list[Frame]:
        """Stored frames after seq. Viewers resuming from the same point share one read."""
        key = (video_id, seq)
        task = self._reads.get(key)
        if task is None:
            task = self._reads[key] = asyncio.create_task(self._read(video_id, seq))
            task.add_done_callback(lambda _: self._reads.pop(key, None))
        return await asyncio.shield(task)

    async def _read(self, video_id: str, seq: int) -> list[Frame]:
        comments = await self._storage.since(video_id, seq, self._backlog_limit)
        return [build_frame(c) for c in comments]

    @property
    def backlog_limit(self) -> int:
        return self._backlog_limit

    def viewer_count(self) -> int:
        return sum(len(s.viewers) for s in self._videos.values())

