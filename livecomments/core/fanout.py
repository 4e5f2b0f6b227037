"""The fan-out: a video's frames written to every one of its local viewers.

Called by the sequencer only (core/sequencer.py: comments in seq order, each once), on the
loop, synchronously: it never awaits, so a slow viewer cannot hold it. Per viewer it does one
comparison and one transport write; the frames are encoded (joined, chunked) once for all,
SSE and WebSocket viewers alike: each form is built once per write and a viewer picks its own
by index (`forms[viewer.form]`, no branch), so a WebSocket viewer costs what an SSE one does.

Batching (`batch_ms`): a video's comments within one window go out as one write per viewer.
Fixed mode holds every comment up to a window; adaptive mode holds only hot videos, whose
viewers x comments/s reaches `batch_hot` (where a write per comment per viewer would cost
real CPU); a quiet video's comment is written at once. Frames stay in seq order either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

from livecomments.core import frames as sse
from livecomments.core.video import Video
from livecomments.core.viewer import Frame, Viewer
from livecomments.metrics import Metrics


class Batch:
    """The fan-out's state of one video (written only here)."""

    __slots__ = ("pending", "flush", "rate_start", "rate_count", "last_rate")

    def __init__(self) -> None:
        self.pending: list[tuple[Frame, float]] = []  # in seq order, waiting for the batch window
        self.flush: asyncio.TimerHandle | None = None
        self.rate_start = -1e9  # adaptive batching: the video's comments per second
        self.rate_count = 0
        self.last_rate = 0


class Fanout:
    def __init__(self, metrics: Metrics, *, batch_ms: float, adaptive: bool, hot: int) -> None:
        self._metrics = metrics
        self._window = batch_ms / 1000
        self._adaptive = adaptive
        self._hot = hot

    def emit(self, video: Video, frame: Frame, created_at: float) -> None:
        """Write now, or join the video's batch window. `created_at` feeds the latency histogram."""
        if not frame[1]:  # a deleted comment's place (repair) only advances seq; chunk(b"") would end the stream
            return
        batch = video.batch
        window = self._window
        hold = bool(window) and (not self._adaptive or self._is_hot(video))  # counts every comment
        if batch.flush is not None:
            batch.pending.append((frame, created_at))
            return
        if hold:
            batch.pending.append((frame, created_at))
            batch.flush = asyncio.get_running_loop().call_later(window, self._flush, video)
            return
        self._write(video.viewers, [frame], (created_at,))

    def _is_hot(self, video: Video) -> bool:
        """Adaptive batching: is viewers x comments/s at least `batch_hot`? The rate is the
        larger of the last full second's count and the current second's count so far."""
        batch = video.batch
        now = asyncio.get_running_loop().time()
        if now - batch.rate_start >= 1.0:
            batch.last_rate = batch.rate_count if now - batch.rate_start < 2.0 else 0
            batch.rate_start, batch.rate_count = now, 0
        batch.rate_count += 1
        return len(video.viewers) * max(batch.last_rate, batch.rate_count) >= self._hot

    def _flush(self, video: Video) -> None:
        batch = video.batch
        pending, batch.pending, batch.flush = batch.pending, [], None
        self._write(video.viewers, [frame for frame, _ in pending], [created for _, created in pending])

    def _write(self, viewers: set[Viewer], frames: list[Frame], created: Sequence[float]) -> None:
        """One write per viewer for all the frames, encoded (joined, chunked) once for all: each
        viewer is written the form its connection takes (viewer.py PLAIN, CHUNKED, WEBSOCKET)."""
        if len(frames) == 1:
            plain, ws = frames[0][1], frames[0][2]
        else:
            plain, ws = b"".join(frame[1] for frame in frames), b"".join(frame[2] for frame in frames)
        forms = (plain, sse.chunk(plain), ws)
        first = frames[0][0]
        for viewer in viewers:
            if viewer.after < first:  # the hot path: live, and these frames are new to it
                viewer.write(forms[viewer.form])
            else:
                viewer.offer(frames)
        n = len(viewers)
        if n:
            self._metrics.delivered.inc(n * len(frames))
            # One observation per comment: every viewer was written in this same instant.
            now = time.time()
            for created_at in created:
                self._metrics.latency.observe(max(0.0, now - created_at))

    def discard(self, video: Video) -> None:
        """The video is gone (no viewer left): what its window holds is for nobody."""
        if video.batch.flush is not None:
            video.batch.flush.cancel()
            video.batch.flush = None

    def close_viewers(self, videos: Iterable[Video]) -> None:
        """Shutdown: send what batching still holds, then end every stream cleanly."""
        for video in videos:
            if video.batch.flush is not None:
                video.batch.flush.cancel()
                self._flush(video)
            for viewer in video.viewers:
                viewer.drop("shutdown")
