"""A video's life on this process: viewers join and leave; the video is watched, its head
read, a failed watch retried, and the video unwatched a little after its last viewer left.

One lifecycle task per video does the watching, the head read and the unwatching, in that
order and never two at once (a viewer arriving during an unwatch waits for it, then the
video is watched again). A watch is never cancelled midway, so the unwatch that follows
undoes all it did. A video the strategy cannot deliver now (broker link down, registry
lease lost) is still served: the head check polls storage for it (core/repair.py) while
its lifecycle retries the watch at the head check's pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from livecomments.core.video import Video, Videos
from livecomments.core.viewer import Viewer
from livecomments.metrics import Metrics
from livecomments.storage.base import Storage
from livecomments.strategies.base import Strategy

log = logging.getLogger(__name__)


class Watch:
    """The lifecycle's state of one video (written only here)."""

    __slots__ = ("head", "watched", "wake", "task", "linger")

    def __init__(self) -> None:
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # done: head known
        self.watched = False  # the strategy delivers this video here; False: served by polling storage
        self.wake = asyncio.Event()  # something the lifecycle acts on changed
        self.task: asyncio.Task[None] | None = None  # the lifecycle
        self.linger: asyncio.TimerHandle | None = None


class Feed(Protocol):
    """What the lifecycle tells the video's ordered feed (core/sequencer.py Sequencer)."""

    def position(self, video: Video) -> int | None: ...
    def start_at(self, video: Video, head: int) -> None: ...
    def forget(self, video: Video) -> None: ...
    def repair(self, video: Video) -> None: ...


class Lifecycle:
    """Runs on the loop. `new_video` makes a table row; `on_removed` is told once a video is
    gone from the table (its other parts let go of their timers and tasks)."""

    def __init__(
        self, videos: Videos, storage: Storage, strategy: Strategy, metrics: Metrics, feed: Feed, *,
        new_video: Callable[[str], Video], on_removed: Callable[[Video], None], linger: float,
        retry_interval: float,
    ) -> None:
        self._videos = videos
        self._storage = storage
        self._strategy = strategy
        self._metrics = metrics
        self._feed = feed
        self._new_video = new_video
        self._on_removed = on_removed
        self._linger = linger
        self._retry_interval = retry_interval

    async def join(self, viewer: Viewer) -> int:
        """Register a viewer (it holds live frames) and return the video's head: every
        comment after it reaches the viewer, by the strategy or, while this process is
        degraded (the watch failed: broker or registry down), by polling storage.
        Raises only if the head cannot be read from storage."""
        video = self._videos.get(viewer.video_id)
        if video is None:
            video = self._new_video(viewer.video_id)
            self._videos.add(video)
            video.watch.task = asyncio.create_task(self._run(video))
            video.watch.task.add_done_callback(_report_death)
            self._metrics.watched_videos.inc()
        elif video.watch.linger is not None:
            video.watch.linger.cancel()
            video.watch.linger = None
        video.viewers.add(viewer)
        self._videos.touch(video)
        video.watch.wake.set()
        self._metrics.connections.inc()
        try:
            while (head := self._feed.position(video)) is None:
                await asyncio.shield(video.watch.head)
        except BaseException:
            self.leave(viewer)
            raise
        return head

    def leave(self, viewer: Viewer) -> None:
        video = self._videos.get(viewer.video_id)
        if video is None or viewer not in video.viewers:
            return
        video.viewers.discard(viewer)
        self._metrics.connections.dec()
        if viewer.dropped == "slow":
            self._metrics.slow_disconnects.inc()
        if not video.viewers:  # viewer churn must not become watch churn: wait a little
            video.watch.linger = asyncio.get_running_loop().call_later(self._linger, self._expire, video)

    def watched(self, video: Video) -> bool:
        return video.watch.watched

    def wake_all(self) -> None:
        """The strategy is back (broker reconnected, lease restored): a video served from
        storage meanwhile can be watched again."""
        for video in self._videos:
            video.watch.wake.set()

    def retry_watches(self) -> None:
        """The head check's tick: one timer for all the failed watches, not one per video; a
        dead broker is not asked once per video per interval."""
        if self._strategy.ready:
            for video in self._videos:
                if not video.watch.watched and video.viewers:
                    video.watch.wake.set()

    def stop(self) -> list[asyncio.Task[None]]:
        """Cancel every lifecycle and linger, fail the joins still waiting; the caller awaits the tasks."""
        tasks = []
        for video in self._videos:
            watch = video.watch
            if watch.linger is not None:
                watch.linger.cancel()
            if watch.task is not None:
                watch.task.cancel()
                tasks.append(watch.task)
            if not watch.head.done():
                watch.head.set_exception(ConnectionError("shutting down"))
                watch.head.exception()  # retrieved: a join may or may not be waiting on it
        return tasks

    def _expire(self, video: Video) -> None:
        video.watch.linger = None
        video.watch.wake.set()

    async def _run(self, video: Video) -> None:
        watch = video.watch
        while True:
            watch.wake.clear()  # before acting: a change meanwhile makes the wait below return
            if video.viewers or watch.linger is not None:
                await self._serve(video)
            elif watch.watched:
                await self._unwatch(video)
            else:
                break
        self._videos.remove(video.video_id)
        self._metrics.watched_videos.dec()
        self._on_removed(video)

    async def _serve(self, video: Video) -> None:
        """Watch, know the head, then wait for a change. A failed watch is retried once the
        strategy is ready again (retry_watches); the first attempt is made anyway, since a
        broker still connecting (a process just started) answers it."""
        watch, video_id = video.watch, video.video_id
        if not watch.watched and (self._strategy.ready or self._feed.position(video) is None):
            try:
                await self._strategy.watch(video_id)
            except Exception as e:
                log.warning("watching %s failed; serving it from storage meanwhile: %s", video_id, e)
            else:
                watch.watched = True
                self._feed.repair(video)  # polled until now: what came before the watch
        if self._feed.position(video) is None:
            try:
                head = await self._storage.last_seq(video_id)
            except Exception as e:  # the waiting joins fail (503); the next join tries again
                failed, watch.head = watch.head, asyncio.get_running_loop().create_future()
                failed.set_exception(e)
                failed.exception()  # retrieved here: the joins may have gone already
            else:
                self._feed.start_at(video, head)
                watch.head.set_result(None)
        await watch.wake.wait()  # a join, a leave, wake_all(), or retry_watches() after a failed watch

    async def _unwatch(self, video: Video) -> None:
        """A failed unwatch (registry unreachable) is retried, never left behind: a stale
        route would make writers push here for the life of the process."""
        watch = video.watch
        self._feed.forget(video)  # a repair reads from the last seq: re-read from the new head instead
        if watch.head.done():
            watch.head = asyncio.get_running_loop().create_future()
        try:
            await self._strategy.unwatch(video.video_id)
        except Exception as e:
            log.warning("unwatch %s failed, retrying: %s", video.video_id, e)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._retry_interval):
                    await watch.wake.wait()
        else:
            watch.watched = False


def _report_death(task: asyncio.Task[None]) -> None:
    """A lifecycle ends by returning or by stop() cancelling it; anything else is a bug to see."""
    if not task.cancelled() and task.exception() is not None:
        log.error("a video's lifecycle died", exc_info=task.exception())
