"""A viewer that resumes far back and never reads is cut during the catch-up, within a bound,
and counted as slow: the backlog never piles up in the server for it."""

from __future__ import annotations

import asyncio

from tests.fixtures.raw_stream import stalled_stream
from tests.helpers import metric, post, until_metric
from tests.sse import open_stream

TEXT = "x" * 2000


def _backlog() -> int:
    """1,500 comments (~3 MB), or more where the kernel's send buffer could take them all:
    what the server holds back must be far past the bound whatever the kernel absorbed."""
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        wmem_max = int(f.read().split()[2])
    return max(1500, (wmem_max + (1 << 20)) // len(TEXT))


BACKLOG = _backlog()


async def _fill(session, base: str, video: str) -> None:
    async def poster(k: int) -> None:
        for _ in range(k):
            await post(session, base, video, TEXT)

    await asyncio.gather(*(poster(BACKLOG // 15 + (i < BACKLOG % 15)) for i in range(15)))


async def test_stalled_resume_from_the_start_is_cut_during_catch_up(start_server, session):
    base = await start_server(viewer_buffer=64 * 1024, send_timeout=1.0)
    await _fill(session, base, "deep")
    stalled = await stalled_stream(base, "/v1/videos/deep/stream?since=0")
    try:
        # Cut after at most send_timeout once its buffers are full; never on today's code.
        await until_metric(session, base, "livecomments_slow_viewers_disconnected_total", 1, timeout=15)
        await until_metric(session, base, "livecomments_connections", 0, timeout=5)
    finally:
        stalled.close()
    # A viewer that reads gets the same backlog whole, and the stream then goes live.
    reader = await open_stream(session, base, "deep", last_event_id=0)
    assert [c["seq"] for c in await reader.comments(BACKLOG, timeout=30)] == list(range(1, BACKLOG + 1))
    await post(session, base, "deep", "live")
    assert (await reader.next_comment())["seq"] == BACKLOG + 1
    assert await metric(session, base, "livecomments_slow_viewers_disconnected_total") == 1


async def test_stalled_viewer_is_cut_at_the_seam_once_held_comments_pass_the_bound(start_server, session):
    base = await start_server(viewer_buffer=64 * 1024, send_timeout=60.0)  # the catch-up would wait long
    await _fill(session, base, "seam")
    stalled = await stalled_stream(base, "/v1/videos/seam/stream?since=0")
    try:
        # Its catch-up cannot finish, so what arrives live meanwhile is held for it, up to the bound.
        for _ in range(40):  # 80 KB
            await post(session, base, "seam", TEXT)
        await until_metric(session, base, "livecomments_slow_viewers_disconnected_total", 1, timeout=10)
        await until_metric(session, base, "livecomments_connections", 0, timeout=5)
    finally:
        stalled.close()
