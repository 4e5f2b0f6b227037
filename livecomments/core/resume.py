"""The resume seam of a joining viewer, for any transport: stored comments after the resume
point, then the live frames the viewer held meanwhile, with no gap and no duplicate.

Framework-free: the edge passes `send` (its bounded writes: False once the viewer was cut)
and `reset` (its encoding of "the resume point is gone"). A viewer is sent its own form of
each stored frame (`viewer.part`: the SSE bytes or the WebSocket frame), read once for every
viewer resuming from the same point (`Hub.read_since`). Both edges use it: the SSE stream
(edge/stream.py) and the WebSocket (edge/ws.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from livecomments.core.hub import Hub
from livecomments.core.viewer import Viewer
from livecomments.storage.base import Storage

Send = Callable[[list[bytes]], Awaitable[bool]]


async def catch_up(send: Send, reset: Callable[[int], bytes], storage: Storage, hub: Hub, viewer: Viewer,
                   head: int, since: int | None) -> int:
    """Send stored comments after `since`; returns the last seq sent. Live frames held
    meanwhile by the viewer start at head+1, so the two overlap and never leave a gap."""
    if since is None:
        return head
    if since > head:  # this server's feed lags storage, or the seq is from a storage since replaced
        stored = await storage.last_seq(viewer.video_id)
        if since > stored:  # never reached: say so, and go on from now
            await send([reset(stored + 1)])
            return stored
    last, part = since, viewer.part
    while True:
        frames = await hub.read_since(viewer.video_id, last, head)
        if last == since and frames and frames[0][0] > since + 1:
            if not await send([reset(frames[0][0])]):  # older comments are gone
                return last
        if last == since and not frames and since < head:  # retention removed all of since+1..head
            await send([reset(head + 1)])
            return head
        if frames:
            if not await send([frame[part] for frame in frames if frame[part]]):
                return last
            last = frames[-1][0]
        # Done at a short page, or once the live frames held meanwhile join on.
        held = viewer.held
        if len(frames) < hub.backlog_limit or (held and held[0][0] <= last + 1):
            return last
