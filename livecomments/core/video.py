"""A watched video's state in the Hub: its viewers, where its delivery stands, its timers and tasks."""

from __future__ import annotations

import asyncio

from livecomments.core.viewer import Frame, Viewer
from livecomments.model import Comment


class VideoState:
    __slots__ = ("viewers", "last_seq", "head", "held", "watched", "wake", "task", "linger", "repair", "rescan",
                 "pending", "flush", "touched", "rate_start", "rate_count", "last_rate", "viewers_shown")

    def __init__(self, tick: int) -> None:
        self.viewers: set[Viewer] = set()
        self.last_seq: int | None = None  # None until the head is read (again after an unwatch)
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # done: last_seq known
        self.held: list[Comment] = []  # arrived while initialising or repairing
        self.watched = False  # the strategy delivers this video here; False: served by polling storage
        self.wake = asyncio.Event()  # something the lifecycle acts on changed
        self.task: asyncio.Task[None] | None = None  # the lifecycle
        self.linger: asyncio.TimerHandle | None = None
        self.repair: asyncio.Task[None] | None = None
        self.rescan = False  # the broker reconnected during a repair: read storage once more
        self.pending: list[tuple[Frame, float]] = []  # in seq order, waiting for the batch window
        self.flush: asyncio.TimerHandle | None = None
        self.touched = tick  # head-check tick of the last join or comment: "recent activity"
        self.rate_start = -1e9  # adaptive batching: the video's comments per second
        self.rate_count = 0
        self.last_rate = 0
        self.viewers_shown = -1  # the viewer count its viewers were last sent (livecomments/core/counts.py)
