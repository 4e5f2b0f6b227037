"""The fan-out: a video's frames written to every one of its local viewers.

Called by the sequencer only (core/sequencer.py: comments in seq order, each once), on the
loop, synchronously: it never awaits, so a slow viewer cannot hold it. Per viewer it does one
comparison and one transport write; the frames are encoded (joined, chunked) once for all,
SSE and WebSocket viewers alike: each form is built once per write and a viewer picks its own
by index (`forms[viewer.form]`, no branch), so a WebSocket viewer costs what an SSE one does.

Batching (`batch_mode`, `batch_ms`) decides when a video's comments go out; frames stay in seq
order in every mode, and `batch_ms = 0` writes each comment at once in every mode.

- paced (the default): batch by what the loop could not send yet, not by a clock. Each write
  pass to a video's viewers is timed (two clock reads per pass, not per viewer) and paid for
  once the loop has had PACE x that time since (as much time for other work as the pass took).
  A comment that finds at most BURST (2) passes unpaid, and at most `batch_ms` of them, is written
  at once; one that comes sooner joins the video's pending frames, flushed when the debt is down
  to that or `batch_ms` after it came, whichever is first. So an idle loop sends at once (and a close pair of comments, jitter,
  too), while a busy video's passes are spaced PACE x their duration apart: it coalesces more as
  the rate grows (CPU per delivery falls with it), and under overload its windows widen
  (latency, up to `batch_ms`) instead of losing or growing memory.
- fixed: every comment waits for a window of `batch_ms`.
- adaptive: fixed windows for hot videos only, whose viewers x comments/s reaches `batch_hot`;
  a quiet video's comment is written at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

from livecomments.core import frames as sse
from livecomments.core.video import Video
from livecomments.core.viewer import Frame, Viewer
from livecomments.metrics import Metrics

MODES = ("paced", "fixed", "adaptive")
# Paced mode: a busy video's passes start PACE x a pass's duration apart, so its fan-out takes
# at most about 1/PACE of the loop.
PACE = 2.0
BURST = 2  # passes of debt a comment may find and still go out at once (jitter, a close pair)


class Batch:
    """The fan-out's state of one video (written only here)."""

    __slots__ = ("pending", "flush", "paid_at", "next_pass", "rate_start", "rate_count", "last_rate")

    def __init__(self) -> None:
        self.pending: list[tuple[Frame, float]] = []  # in seq order, waiting for their pass
        self.flush: asyncio.TimerHandle | None = None
        self.paid_at = 0.0  # paced: perf_counter() when the loop has had its time for every pass so far
        self.next_pass = 0.0  # paced: before it, more than BURST passes are unpaid and a comment waits
        self.rate_start = -1e9  # adaptive: the video's comments per second
        self.rate_count = 0
        self.last_rate = 0


class Fanout:
    def __init__(self, metrics: Metrics, *, mode: str, batch_ms: float, hot: int) -> None:
        assert mode in MODES, mode
        self._metrics = metrics
        self._window = batch_ms / 1000
        self._paced = mode == "paced"
        self._adaptive = mode == "adaptive"
        self._hot = hot

    def emit(self, video: Video, frame: Frame, created_at: float) -> None:
        """Write now, or join the video's pending frames. `created_at` feeds the latency histogram."""
        if not frame[1]:  # a deleted comment's place (repair) only advances seq; chunk(b"") would end the stream
            return
        batch = video.batch
        hot = not self._adaptive or self._is_hot(video)  # adaptive: counts every comment, held or not
        if batch.flush is not None:
            batch.pending.append((frame, created_at))
            return
        window = self._window
        if self._paced:
            wait = batch.next_pass - time.perf_counter()
            hold = window > 0 and wait > 0
            delay = min(wait, window)
        else:
            hold = window > 0 and hot
            delay = window
        if hold:
            batch.pending.append((frame, created_at))
            batch.flush = asyncio.get_running_loop().call_later(delay, self._flush, video)
        else:
            self._pass(video, [frame], (created_at,))

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
        self._pass(video, [frame for frame, _ in pending], [created for _, created in pending])

    def _pass(self, video: Video, frames: list[Frame], created: Sequence[float]) -> None:
        """One write pass, and its bill: PACE x the time it took. Wall time, not the thread's
        CPU time: on a core shared with other processes a pass holds the loop for longer than
        its CPU, and billing the CPU made passes follow each other until posts starved."""
        start = time.perf_counter()
        self._write(video.viewers, frames, created)
        end = time.perf_counter()
        cost = PACE * (end - start)
        batch = video.batch
        # A token bucket in time (GCRA): the debt is capped at BURST + 1 passes, so a quiet spell after
        # an overload starts paid, and BURST passes of it, but never more than `batch_ms`, are
        # tolerated before a comment waits (BURST 2 against 1: p99 at 50 and 200 comments/s lower, the
        # same CPU at 2,000/s; the `batch_ms` cap: at 10,000 viewers a pass takes ~90 ms, and two passes
        # of tolerance wrote nearly every comment in a pass of its own, issue 20).
        batch.paid_at = min(max(batch.paid_at, start) + cost, start + (BURST + 1) * cost)
        batch.next_pass = batch.paid_at - min(BURST * cost, self._window)

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
            # The hot path, Viewer.write inlined (a call per viewer is a measurable share of a pass):
            # a live viewer to which these frames are new, on an open transport, bound checked.
            if viewer.after < first:
                transport = viewer.transport
                if not transport.is_closing():  # lost, not yet told: connection_lost is on its way
                    transport.write(forms[viewer.form])
                    if transport.get_write_buffer_size() > viewer.max_buffer:
                        viewer.drop("slow")
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
        """The video is gone (no viewer left): what its pending frames are for is nobody."""
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
