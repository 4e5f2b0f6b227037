"""GET /v1/videos/{video_id}: what a page shows next to the stream."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from livecomments.edge.keys import HUB, STORAGE, STRATEGY
from livecomments.errors import dumps
from livecomments.model import parse_video_id

log = logging.getLogger(__name__)


async def get_video(request: web.Request) -> web.Response:
    video_id = parse_video_id(request.match_info["video_id"])
    storage = request.app[STORAGE]
    last_seq = await storage.last_seq(video_id)
    _, slow_mode_s = await storage.post_policy(video_id, None, time.time())
    return web.json_response({
        "video_id": video_id,
        "last_seq": last_seq,
        "viewers": await _viewers(request.app, video_id),
        "slow_mode_s": slow_mode_s,
    }, dumps=dumps)


async def _viewers(app: web.Application, video_id: str) -> int | None:
    """The video's viewers on every realtime process (livecomments/core/counts.py): this process's own
    total when it watches the video (its viewers now, the others' as last heard); else the
    strategy's shared state (the dispatcher's registry); else, on a pub/sub process that serves
    streams, its own count (exact with the in-memory broker: the only process). None where
    nothing can tell (a pub/sub writer hears none of the channels the counts travel on)."""
    hub = app.get(HUB)
    if hub is not None and hub.counts.watches(video_id):
        return hub.counts.total(video_id)
    try:
        shared = await app[STRATEGY].count_viewers(video_id)
    except Exception as e:  # the registry is down: the rest of the answer is still worth giving
        log.warning("counting the viewers of %s failed: %s", video_id, e)
        return None
    if shared is not None or hub is None:
        return shared
    return hub.counts.total(video_id)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/videos/{video_id}", get_video)
