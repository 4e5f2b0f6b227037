"""The realtime side's local fan-out: video -> viewers, seq tracking, gap repair.

Framework-free: a Viewer holds an asyncio transport, never an aiohttp response.
The hot path (`Hub.deliver`) runs synchronously in whatever task the strategy
calls it from; it encodes a comment's frame once and hands the same bytes to
every viewer's transport. It never awaits, so a slow viewer cannot hold it.

Batching (`batch_ms`): a video's comments within one window go out as one write per
viewer. Fixed mode holds every comment up to a window; adaptive mode holds only hot
videos, whose viewers × comments/s reaches `batch_hot` (where a write per comment per
viewer would cost real CPU); a quiet video's comment is written at once.

Every acknowledged comment reaches the video's viewers: what the strategy did not bring
is read back from storage (livecomments/core/repair.py). A video the strategy cannot deliver
now (broker link down, registry lease lost) is still served, by polling storage, while its
lifecycle retries the watch.

Viewer counts (`event: viewers`, summed over every realtime process) are livecomments/core/counts.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence

from livecomments.core import frames as sse
from livecomments.core.counts import ViewerCounts
from livecomments.core.heartbeat import Heartbeat
from livecomments.core.repair import Repairs
from livecomments.core.video import VideoState
from livecomments.core.viewer import Frame, Viewer, build_frame
from livecomments.metrics import Metrics
from livecomments.model import Comment
from livecomments.storage.base import Storage
from livecomments.strategies.base import Strategy

log = logging.getLogger(__name__)


class Hub(Repairs):
    def __init__(
        self, storage: Storage, strategy: Strategy, metrics: Metrics, *,
        backlog_limit: int, linger: float, ping_interval: float, repair_interval: float = 2.0,
        batch_ms: float = 0.0, batch_adaptive: bool = False, batch_hot: int = 10_000,
        viewers_interval: float = 2.0,
    ) -> None:
        self._storage = storage
        self._strategy = strategy
        self._metrics = metrics
        self._backlog_limit = backlog_limit
        self._linger = linger
        self._repair_interval = repair_interval
        self._videos: dict[str, VideoState] = {}
        self._reads: dict[tuple[str, int, int], asyncio.Task[list[Frame]]] = {}  # by (video, since, head)
        self._heartbeat = Heartbeat(ping_interval, self._all_viewers)
        self._tick = 0
        self._checker: asyncio.TimerHandle | None = None
        self._check: asyncio.Task[None] | None = None
        self._window = batch_ms / 1000
        self._adaptive = batch_adaptive
        self._hot = batch_hot
        self.counts = ViewerCounts(strategy, self._videos, viewers_interval)

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self._heartbeat.start()
        self.counts.start()
        self._checker = asyncio.get_running_loop().call_later(self._repair_interval, self._on_tick)

    def close_viewers(self) -> None:
        """Shutdown: send what batching still holds, then end every stream cleanly."""
        for state in self._videos.values():
            if state.flush is not None:
                state.flush.cancel()
                self._flush(state)
            for viewer in state.viewers:
                viewer.drop("shutdown")

    async def close(self) -> None:
        """Stop every timer and task of the hub, and wait until they are gone."""
        self._heartbeat.stop()
        await self.counts.close()
        if self._checker is not None:
            self._checker.cancel()
        self.close_viewers()
        tasks = [t for t in (self._check, *self._reads.values()) if t is not None]
        for state in self._videos.values():
            for timer in (state.linger, state.flush):
                if timer is not None:
                    timer.cancel()
            tasks += [t for t in (state.task, state.repair) if t is not None]
            if not state.head.done():
                state.head.set_exception(ConnectionError("shutting down"))
                state.head.exception()  # retrieved: a join may or may not be waiting on it
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _all_viewers(self) -> Iterator[Viewer]:
        for state in self._videos.values():
            yield from state.viewers

    # -- viewers ---------------------------------------------------------

    async def join(self, viewer: Viewer) -> int:
        """Register a viewer (it holds live frames) and return the video's head: every
        comment after it reaches the viewer, by the strategy or, while this process is
        degraded (the watch failed: broker or registry down), by polling storage.
        Raises only if the head cannot be read from storage."""
        state = self._videos.get(viewer.video_id)
        if state is None:
            state = self._videos[viewer.video_id] = VideoState(self._tick)
            state.task = asyncio.create_task(self._lifecycle(viewer.video_id, state))
            state.task.add_done_callback(_report_death)
            self._metrics.watched_videos.inc()
        elif state.linger is not None:
            state.linger.cancel()
            state.linger = None
        state.viewers.add(viewer)
        state.touched = self._tick
        state.wake.set()
        self._metrics.connections.inc()
        try:
            while state.last_seq is None:
                await asyncio.shield(state.head)
        except BaseException:
            self.leave(viewer)
            raise
        return state.last_seq

    def leave(self, viewer: Viewer) -> None:
        state = self._videos.get(viewer.video_id)
        if state is None or viewer not in state.viewers:
            return
        state.viewers.discard(viewer)
        self._metrics.connections.dec()
        if viewer.dropped == "slow":
            self._metrics.slow_disconnects.inc()
        if not state.viewers:  # viewer churn must not become watch churn: wait a little
            state.linger = asyncio.get_running_loop().call_later(self._linger, self._expire, state)

    def _expire(self, state: VideoState) -> None:
        state.linger = None
        state.wake.set()

    async def _lifecycle(self, video_id: str, state: VideoState) -> None:
        """The video's one lifecycle task: watch, read the head, retry a failed watch,
        unwatch once nobody wants the video; in that order and never two at once (a viewer
        arriving during an unwatch waits for it, then the video is watched again). A watch
        is never cancelled midway, so the unwatch that follows undoes all it did."""
        while True:
            state.wake.clear()  # before acting: a change meanwhile makes the wait below return
            if state.viewers or state.linger is not None:
                await self._serve(video_id, state)
            elif state.watched:
                await self._unwatch(video_id, state)
            else:
                break
        del self._videos[video_id]
        self._metrics.watched_videos.dec()
        if state.repair is not None:
            state.repair.cancel()
        if state.flush is not None:
            state.flush.cancel()

    async def _serve(self, video_id: str, state: VideoState) -> None:
        """Watch, know the head, then wait for a change. A failed watch is retried at the
        head check's pace (which polls the video meanwhile: Repairs._on_tick wakes it), once the
        strategy is ready again: a dead broker is not asked once per video per interval. The first attempt
        is made anyway, since a broker still connecting (a process just started) answers it."""
        if not state.watched and (self._strategy.ready or state.last_seq is None):
            try:
                await self._strategy.watch(video_id)
            except Exception as e:
                log.warning("watching %s failed; serving it from storage meanwhile: %s", video_id, e)
            else:
                state.watched = True
                if state.last_seq is not None:  # polled until now: what came before the watch
                    self._start_repair(video_id, state)
        if state.last_seq is None:
            try:
                head = await self._storage.last_seq(video_id)
            except Exception as e:  # the waiting joins fail (503); the next join tries again
                failed, state.head = state.head, asyncio.get_running_loop().create_future()
                failed.set_exception(e)
                failed.exception()  # retrieved here: the joins may have gone already
            else:
                state.last_seq = head
                state.head.set_result(None)
                self._drain(video_id, state)
        await state.wake.wait()  # a join, a leave, resync(), or the head check retrying a failed watch

    async def _unwatch(self, video_id: str, state: VideoState) -> None:
        """A failed unwatch (registry unreachable) is retried, never left behind: a stale
        route would make writers push here for the life of the process."""
        if state.repair is not None:  # it reads from last_seq: re-read from the new head instead
            state.repair.cancel()
            state.repair = None
        state.last_seq, state.held = None, []
        if state.head.done():
            state.head = asyncio.get_running_loop().create_future()
        try:
            await self._strategy.unwatch(video_id)
        except Exception as e:
            log.warning("unwatch %s failed, retrying: %s", video_id, e)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._repair_interval):
                    await state.wake.wait()
        else:
            state.watched = False

    # -- delivery --------------------------------------------------------

    def deliver(self, comment: Comment) -> None:
        """Called by the strategy on the loop. Never awaits: O(viewers) transport writes."""
        state = self._videos.get(comment.video_id)
        if state is None:
            self._metrics.discarded.inc()
            return
        state.touched = self._tick
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
        if not frame[1]:  # a deleted comment's place (repair) only advances seq; chunk(b"") would end the stream
            return
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

    # -- resume ----------------------------------------------------------

    async def read_since(self, video_id: str, seq: int, head: int) -> list[Frame]:
        """Stored frames after seq, up to at least `head` (the viewer's join head: its live
        frames start after it). Viewers resuming from the same point with the same head share
        one read, issued once the hub knew that head: an older read's snapshot may predate a
        comment that such a viewer is never sent live, and the seam would lose it."""
        key = (video_id, seq, head)
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
        """This process's viewers of every video (one video's, over every process: self.counts)."""
        return sum(len(s.viewers) for s in self._videos.values())


def _report_death(task: asyncio.Task[None]) -> None:
    """A lifecycle ends by returning or by close() cancelling it; anything else is a bug to see."""
    if not task.cancelled() and task.exception() is not None:
        log.error("a video's lifecycle died", exc_info=task.exception())
