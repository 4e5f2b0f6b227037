"""The one door into fan-out: every comment passes here, in seq order, each once.

Comments come in two ways, and both end in `_advance`, the only caller of the fan-out:
- `deliver`: what the strategy brings (a broker message or a dispatcher push, already
  counted as received by the strategy's Inbox), called on the loop, synchronously;
- the repair: what storage holds and this process did not receive.

`deliver` drops what was delivered already, holds what arrives before the video's head is
known or while it is repaired, and on a seq jump (the broker or a push dropped something:
delivery is at-most-once) starts the video's repair, which reads the missing range from
storage (one read per video, not per viewer), then drains what was held, in seq order.
A failed read is retried, so held comments never wait for a later comment.

The head check (core/repair.py) and a broker reset (`repair`) start repairs too: a comment
lost with no later one to reveal it is found that way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from livecomments.core.video import Video, Videos
from livecomments.core.viewer import Frame, build_frame
from livecomments.metrics import Metrics
from livecomments.model import Comment
from livecomments.storage.base import Storage

log = logging.getLogger(__name__)

REPAIR_RETRY = 1.0  # seconds between storage reads while a gap cannot be repaired

# The fan-out (core/fanout.py Fanout.emit): sync, on the loop, never awaits.
Emit = Callable[[Video, Frame, float], None]


class Order:
    """The sequencer's state of one video (written only here)."""

    __slots__ = ("last_seq", "held", "repair", "rescan")

    def __init__(self) -> None:
        self.last_seq: int | None = None  # None until the head is read (again after an unwatch)
        self.held: list[Comment] = []  # arrived while the head was unknown or a repair ran
        self.repair: asyncio.Task[None] | None = None
        self.rescan = False  # something made us look during a repair: read storage once more


class Sequencer:
    def __init__(self, videos: Videos, storage: Storage, metrics: Metrics, emit: Emit, backlog_limit: int) -> None:
        self._videos = videos
        self._storage = storage
        self._metrics = metrics
        self._emit = emit
        self._backlog_limit = backlog_limit

    # -- the strategy's way in (the hot path) --------------------------------

    def deliver(self, comment: Comment) -> None:
        """Called by the strategy on the loop. Never awaits: O(viewers) transport writes."""
        video = self._videos.get(comment.video_id)
        if video is None:
            self._metrics.discarded.inc()
            return
        self._videos.touch(video)
        order = video.order
        if order.last_seq is None or order.repair is not None:
            order.held.append(comment)
            return
        self._apply(video, comment)

    def _apply(self, video: Video, comment: Comment) -> None:
        order = video.order
        assert order.last_seq is not None
        if comment.seq <= order.last_seq:
            return  # a duplicate (repair and broker both brought it)
        if comment.seq > order.last_seq + 1:  # the broker dropped something: read it back
            order.held.append(comment)
            order.repair = asyncio.create_task(self._repair(video))
            return
        self._advance(video, comment)

    def _advance(self, video: Video, comment: Comment) -> None:
        """The next comment of the video, whichever way it came: to the fan-out."""
        video.order.last_seq = comment.seq
        self._emit(video, build_frame(comment), comment.created_at)

    def _drain(self, video: Video) -> None:
        order = video.order
        held, order.held = sorted(order.held, key=lambda c: c.seq), []
        for i, comment in enumerate(held):
            self._apply(video, comment)
            if order.repair is not None:  # a gap: the rest waits for the repair
                order.held.extend(held[i + 1 :])
                return

    # -- what the lifecycle and the head check tell it -----------------------

    def position(self, video: Video) -> int | None:
        """The last seq delivered to the video's viewers; None while its head is unknown."""
        return video.order.last_seq

    def repairing(self, video: Video) -> bool:
        return video.order.repair is not None

    def start_at(self, video: Video, head: int) -> None:
        """The video's head is known (read from storage): deliver what was held after it."""
        video.order.last_seq = head
        self._drain(video)

    def forget(self, video: Video) -> None:
        """Unwatched (or gone): no seq is known any more; a running repair read from the old
        head, so it stops (the next watch reads the head afresh)."""
        order = video.order
        if order.repair is not None:
            order.repair.cancel()
            order.repair = None
        order.last_seq, order.held = None, []

    def repair(self, video: Video) -> None:
        """Something may be lost (a head check found storage ahead, the broker reconnected, a
        watch succeeded after polling): read storage from the last seq delivered."""
        order = video.order
        if order.last_seq is None:  # still joining: its head is read after the watch
            return
        if order.repair is None:
            order.repair = asyncio.create_task(self._repair(video))
        else:  # a running repair may have read storage before what made us look
            order.rescan = True

    def stop(self) -> list[asyncio.Task[None]]:
        """Cancel every repair; the caller awaits the tasks returned."""
        tasks = [video.order.repair for video in self._videos if video.order.repair is not None]
        for task in tasks:
            task.cancel()
        return tasks

    # -- the repair -----------------------------------------------------------

    async def _repair(self, video: Video) -> None:
        order = video.order
        while True:
            try:
                await self._catch_up(video)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("repair of %s failed, retrying: %s", video.video_id, e)
                await asyncio.sleep(REPAIR_RETRY)
                continue
            if not order.rescan:
                break
            order.rescan = False
        order.repair = None
        self._drain(video)

    async def _catch_up(self, video: Video) -> None:
        order, video_id = video.order, video.video_id
        while True:
            assert order.last_seq is not None
            before = order.last_seq
            held_before = {c.seq for c in order.held}  # committed before the read below began
            missing = await self._storage.since(video_id, before, self._backlog_limit)
            arrived = {c.seq for c in order.held}  # came by the broker: not a repair
            for comment in missing:
                if comment.seq == order.last_seq + 1:
                    if comment.seq not in arrived:
                        self._metrics.gaps_repaired.inc()
                    self._advance(video, comment)
            if len(missing) == self._backlog_limit:
                continue
            pending = [c.seq for c in order.held if c.seq > order.last_seq]
            if pending and min(pending) > order.last_seq + 1:
                # seq is assigned under the video's head lock, so a read that began after a comment
                # was committed holds every seq below it, unless retention removed them: only then
                # skip. A comment that arrived during the read may be newer than its snapshot: read again.
                if order.last_seq == before and min(pending) in held_before:  # storage lacks them: go on, say so
                    log.warning("%s: seq %d..%d not in storage", video_id, before + 1, min(pending) - 1)
                    order.last_seq = min(pending) - 1
                continue
            return
