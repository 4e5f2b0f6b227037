"""Heartbeats: `: ping` to every live stream once per interval, spread over the interval
(a WebSocket viewer gets a ping frame: proxies see traffic, and its pong tells aiohttp's
own heartbeat, which closes a peer that stops answering, that the peer is alive).

One pass writing to every viewer at once would stall the loop (10k viewers: tens of ms of
writes in one callback, during which no comment goes out). So each interval is cut into
ticks of about TICK seconds: the first tick of a round takes a snapshot of the viewers
(a list of references, no writes), and every tick writes to its own slice of it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable

from livecomments.core import frames as sse
from livecomments.core import wsframes
from livecomments.core.viewer import NOT_LIVE, Viewer

TICK = 0.25  # seconds between slices


class Heartbeat:
    """Called on the loop only. A viewer that joins mid-round is pinged from the next round
    on (within two intervals); one that leaves is skipped when its slice comes."""

    def __init__(self, interval: float, viewers: Callable[[], Iterable[Viewer]]) -> None:
        self._viewers = viewers
        self._slices = max(1, round(interval / TICK))
        self._delay = interval / self._slices
        self._round: list[Viewer] = []
        self._tick = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._delay, self._beat)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._round = []

    def _beat(self) -> None:
        part = self._tick % self._slices
        if part == 0:
            self._round = list(self._viewers())
        size = math.ceil(len(self._round) / self._slices)
        pings = (sse.PING, sse.chunk(sse.PING), wsframes.PING)  # by viewer.form
        for viewer in self._round[part * size : (part + 1) * size]:
            if viewer.after != NOT_LIVE:  # live (not catching up, not dropped)
                viewer.write(pings[viewer.form])
        self._tick += 1
        self._timer = asyncio.get_running_loop().call_later(self._delay, self._beat)
