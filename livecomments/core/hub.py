"""The realtime side's local fan-out, put together from its parts.

Framework-free: a Viewer holds an asyncio transport, never an aiohttp response. The parts
share one table of videos (core/video.py `Videos`) and talk through small interfaces; each
writes only its own state of a video:

| part | module | does |
|---|---|---|
| `Lifecycle` | core/lifecycle.py | joins and leaves; watch, head, linger, unwatch through the strategy |
| `Sequencer` | core/sequencer.py | the one door into fan-out: comments in seq order, each once; gap repair from storage |
| `Fanout` | core/fanout.py | a video's frames to its viewers, encoded once; batching (paced, fixed, adaptive) |
| `HeadCheck` | core/repair.py | the periodic head check: finds what no later comment revealed |
| `ViewerCounts` | core/counts.py | viewer counts over every realtime process, `event: viewers` |
| `Heartbeat` | core/heartbeat.py | `: ping` to every live stream |

Guarantees (see docs/architecture.md): every comment reaches each viewer once and in seq
order, whether the strategy brought it or storage had it; `deliver` never awaits and does
O(1) work per viewer (one comparison, one transport write), so a slow viewer cannot hold the
others; a video the strategy cannot deliver now is still served, by polling storage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from livecomments.core.counts import ViewerCounts
from livecomments.core.fanout import Batch, Fanout
from livecomments.core.heartbeat import Heartbeat
from livecomments.core.lifecycle import Lifecycle, Watch
from livecomments.core.repair import HeadCheck
from livecomments.core.sequencer import Order, Sequencer
from livecomments.core.video import Video, Videos
from livecomments.core.viewer import Frame, Viewer, build_frame
from livecomments.metrics import Metrics
from livecomments.model import Comment
from livecomments.storage.base import Storage
from livecomments.strategies.base import Strategy


class Hub:
    """Called on the loop only. The strategy calls `deliver` (through its Inbox) and `resync`;
    the stream handler calls `join`, `read_since`, `counts.greet` and, once the connection
    is gone, `leave`."""

    def __init__(
        self, storage: Storage, strategy: Strategy, metrics: Metrics, *,
        backlog_limit: int, linger: float, ping_interval: float, repair_interval: float = 2.0,
        batch_mode: str = "paced", batch_ms: float = 0.0, batch_hot: int = 10_000,
        viewers_interval: float = 2.0,
    ) -> None:
        self._storage = storage
        self._backlog_limit = backlog_limit
        self._videos = videos = Videos()
        self._fanout = Fanout(metrics, mode=batch_mode, batch_ms=batch_ms, hot=batch_hot)
        self._sequencer = Sequencer(videos, storage, metrics, self._fanout.emit, backlog_limit)
        self._lifecycle = Lifecycle(
            videos, storage, strategy, metrics, self._sequencer, new_video=_new_video,
            on_removed=self._removed, linger=linger, retry_interval=repair_interval,
        )
        self._head_check = HeadCheck(videos, storage, strategy, self._sequencer, self._lifecycle, repair_interval)
        self._heartbeat = Heartbeat(ping_interval, videos.viewers)
        self._reads: dict[tuple[str, int, int], asyncio.Task[list[Frame]]] = {}  # by (video, since, head)
        self.counts = ViewerCounts(strategy, videos, viewers_interval)
        # A comment from the strategy: the sequencer's own method, so the hot path costs no extra call.
        self.deliver: Callable[[Comment], None] = self._sequencer.deliver

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self._heartbeat.start()
        self.counts.start()
        self._head_check.start()

    def close_viewers(self) -> None:
        """Shutdown: send what batching still holds, then end every stream cleanly."""
        self._fanout.close_viewers(self._videos)

    async def close(self) -> None:
        """Stop every timer and task of the hub, and wait until they are gone."""
        self._heartbeat.stop()
        await self.counts.close()
        tasks: list[asyncio.Task[Any]] = [*self._head_check.stop()]
        self.close_viewers()
        tasks += [*self._reads.values(), *self._lifecycle.stop(), *self._sequencer.stop()]
        for video in self._videos:
            self._fanout.discard(video)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _removed(self, video: Video) -> None:
        """The lifecycle let the video go: its repair and batch window go with it."""
        self._sequencer.forget(video)
        self._fanout.discard(video)

    # -- viewers ---------------------------------------------------------

    async def join(self, viewer: Viewer) -> int:
        """Register a viewer (it holds live frames from now on) and return the video's head:
        every comment after it reaches the viewer. Raises only if storage cannot give the head."""
        return await self._lifecycle.join(viewer)

    def leave(self, viewer: Viewer) -> None:
        self._lifecycle.leave(viewer)

    def resync(self) -> None:
        """The broker link or the registry lease came back: anything may have been lost
        while it was down, and a video served from storage can be watched again."""
        self._lifecycle.wake_all()
        for video in self._videos:
            self._sequencer.repair(video)

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
        return self._videos.viewer_count()


def _new_video(video_id: str) -> Video:
    """A table row with each part's fresh state of the video."""
    return Video(video_id, Watch(), Order(), Batch())
