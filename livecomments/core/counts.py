"""Viewer counts: how many watch a video on every realtime process, and `event: viewers`.

Once per `viewers_interval` one task of the Hub:
1. shares this process's local counts through the strategy: only the videos whose count
   changed (0 when the last viewer left), the videos it has just started watching (the
   others then send theirs again, so a newcomer server learns the total within two
   intervals), and every count on each REFRESH_TICKS-th tick, so that the counts of a
   process that crashed can expire;
2. learns the others' counts: pushed to `on_counts` by pub/sub strategies (kept per
   server, dropped EXPIRE_TICKS intervals after their last refresh), or returned by the
   dispatcher's registry (whose lease expires a dead server's counts);
3. for every watched video whose total changed since its viewers were last told, encodes
   one frame and writes it to its viewers like a comment. A video whose total is unchanged
   costs no per-viewer work.

A newcomer is told the current total at once (`greet`, as its stream goes live), without waiting for a change.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets

from livecomments.backoff import cancelling
from livecomments.core import frames as sse
from livecomments.core import wsframes
from livecomments.core.video import Video, Videos
from livecomments.core.viewer import NOT_LIVE, Viewer
from livecomments.strategies.base import CountsShare, ViewerCountExchange

log = logging.getLogger(__name__)

REFRESH_TICKS = 3  # every local count is shared again on every this-many-th tick, changed or not
EXPIRE_TICKS = 7  # a process's count not refreshed for this many ticks is gone (more than two refreshes)
GOODBYE_TIMEOUT = 1.0  # seconds a clean stop spends saying its viewers are gone
REGISTRY = ""  # the server key of the totals a registry returned: the registry has expired the dead


class ViewerCounts:
    """Runs on the loop. Reads the table of watched videos (their viewers), changes nothing
    of it; shares and learns the counts through the strategy's ViewerCountExchange."""

    def __init__(self, exchange: ViewerCountExchange, videos: Videos, interval: float) -> None:
        self._sharing = exchange
        self._videos = videos
        self._interval = interval
        self.server = secrets.token_hex(6)  # a restarted process is a new server: the old counts expire
        self._remote: dict[str, dict[str, tuple[int, float]]] = {}  # video -> server -> (count, expires)
        self._shared: dict[str, int] = {}  # local counts as last shared (never 0)
        self._asked: set[str] = set()  # videos another process has just started watching
        self._shown: dict[Video, int] = {}  # the total each video's viewers were last sent
        self._tick = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop, and say that this process's viewers are gone: a clean stop (a rolling restart)
        is not counted until its counts expire. Best effort: what fails here expires anyway."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._shared:
            try:
                async with asyncio.timeout(GOODBYE_TIMEOUT):
                    await self._sharing.share_counts(CountsShare(self.server, dict.fromkeys(self._shared, 0)))
            except Exception as e:
                log.warning("withdrawing the viewer counts at close failed: %s", e)
            self._shared.clear()

    def on_counts(self, server: str, counts: dict[str, int], ask: list[str]) -> None:
        """Another process's counts (pub/sub strategies; runs in the broker's reader task)."""
        if server == self.server:
            return  # our own message, back from the channel
        expires = asyncio.get_running_loop().time() + EXPIRE_TICKS * self._interval
        for video_id, n in counts.items():
            if video_id in self._videos:  # broadcast brings every video's counts: keep the watched ones
                if n > 0:
                    self._remote.setdefault(video_id, {})[server] = (n, expires)
                elif video_id in self._remote:
                    self._remote[video_id].pop(server, None)
        self._asked.update(v for v in ask if v in self._videos)

    def total(self, video_id: str, now: float | None = None) -> int:
        """The video's viewers here (as of now) and elsewhere (as last heard)."""
        video = self._videos.get(video_id)
        local = 0 if video is None else len(video.viewers)
        remote = self._remote.get(video_id)
        if not remote:
            return local
        if now is None:
            now = asyncio.get_running_loop().time()
        return local + sum(n for n, expires in remote.values() if expires > now)

    def watches(self, video_id: str) -> bool:
        return video_id in self._videos

    def greet(self, viewer: Viewer) -> None:
        """A newcomer learns the count as it goes live (after its backlog and held frames). The
        others learn of the change on the next tick; a lone viewer is the only one to tell."""
        video = self._videos.get(viewer.video_id)
        if video is None or viewer.dropped is not None:
            return
        total = self.total(viewer.video_id)
        viewer.write(_forms(viewer.video_id, total)[viewer.form])
        if len(video.viewers) == 1:
            self._shown[video] = total

    async def _run(self) -> None:
        while not cancelling():  # a client library may have swallowed our cancellation (backoff.cancelling)
            await asyncio.sleep(self._interval)
            try:
                await self._exchange()
            except Exception as e:  # a broker or registry down: the next tick tries again
                log.warning("sharing viewer counts failed: %s", e)
            self._show()
            self._tick += 1
        raise asyncio.CancelledError

    async def _exchange(self) -> None:
        local = {video.video_id: len(video.viewers) for video in self._videos}
        everything = self._tick % REFRESH_TICKS == 0
        asked, self._asked = self._asked, set()
        changed = {v: n for v, n in local.items() if n and (everything or v in asked or self._shared.get(v) != n)}
        changed.update((v, 0) for v in self._shared if not local.get(v))
        fresh = [v for v, n in local.items() if n and v not in self._shared]
        share = CountsShare(self.server, changed, fresh, list(local), EXPIRE_TICKS * self._interval)
        others = await self._sharing.share_counts(share)
        for video_id, n in changed.items():
            if n:
                self._shared[video_id] = n
            else:
                self._shared.pop(video_id, None)
        if others is not None:  # a registry's totals replace what was known
            self._remote = {v: {REGISTRY: (n, math.inf)} for v, n in others.items() if n}
        now = asyncio.get_running_loop().time()
        for video_id, servers in list(self._remote.items()):
            if video_id not in self._videos:  # not listened to any more
                del self._remote[video_id]
            elif any(expires <= now for _, expires in servers.values()):  # a server gone quiet (crashed)
                self._remote[video_id] = {s: e for s, e in servers.items() if e[1] > now}

    def _show(self) -> None:
        """Tell the viewers of every video whose total changed: one frame per video, shared.
        Keyed by the row, not the id: a video gone and back is a new row, told afresh."""
        now = asyncio.get_running_loop().time()
        shown, self._shown = self._shown, {}
        for video in self._videos:
            total = self.total(video.video_id, now)
            if total == shown.get(video, -1) or not video.viewers:
                if video in shown:
                    self._shown[video] = shown[video]
                continue
            self._shown[video] = total
            forms = _forms(video.video_id, total)
            for viewer in video.viewers:
                if viewer.after != NOT_LIVE:  # live; one still joining is greeted with the total as it goes live
                    viewer.write(forms[viewer.form])


def _forms(video_id: str, total: int) -> tuple[bytes, bytes, bytes]:
    """The count in every form a viewer takes (core/viewer.py PLAIN, CHUNKED, WEBSOCKET), built once."""
    plain = sse.viewers_frame(video_id, total)
    return plain, sse.chunk(plain), wsframes.viewers_message(video_id, total)
