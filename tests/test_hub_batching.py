"""Batching: a video's comments in one window go out as one write per viewer, in order;
adaptive mode holds only hot videos, so a quiet video's comment is written at once."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.fixtures.raw_stream import RawStream


async def post(session: aiohttp.ClientSession, base: str, video: str, text: str) -> int:
    async with session.post(f"{base}/v1/videos/{video}/comments", json={"text": text, "author": "t"}) as r:
        assert r.status == 201
        return int((await r.json())["seq"])


async def test_fixed_window_coalesces_in_order_and_holds_at_most_the_window(start_server, session):
    base = await start_server(batch_ms=300, batch_adaptive=False)
    viewers = [await RawStream.open(base, "v") for _ in range(3)]
    try:
        started = time.monotonic()
        for i in range(5):
            await post(session, base, "v", f"c{i}")
        for viewer in viewers:
            assert await viewer.comment_chunk() == [1, 2, 3, 4, 5]  # one write, seq order
        assert time.monotonic() - started >= 0.25  # held for the window from the first comment
        await post(session, base, "v", "c5")  # the window that was flushed does not hold it again
        for viewer in viewers:
            assert await viewer.comment_chunk() == [6]
    finally:
        for viewer in viewers:
            viewer.close()


async def test_adaptive_writes_a_quiet_video_at_once(start_server, session):
    base = await start_server(batch_ms=5000, batch_adaptive=True)
    viewer = await RawStream.open(base, "quiet")
    try:
        for i in range(3):  # a small video: never held, even with comments close together
            seq = await post(session, base, "quiet", f"c{i}")
            assert await viewer.comment_chunk(timeout=2.0) == [seq]  # well inside the 5 s window
    finally:
        viewer.close()


HOT_VIEWERS = 64


async def test_adaptive_batches_a_hot_video_after_its_first_comment(start_server, session):
    # 64 viewers × 2 comments/s reaches batch_hot=100: the second comment makes the video hot
    base = await start_server(batch_ms=4000, batch_adaptive=True, batch_hot=100)
    viewers = await asyncio.gather(*(RawStream.open(base, "hot") for _ in range(HOT_VIEWERS)))
    try:
        await post(session, base, "hot", "first")  # 64 × 1/s: not hot yet, goes at once
        firsts = await asyncio.gather(*(v.comment_chunk(timeout=2.0) for v in viewers))  # < the window
        assert firsts == [[1]] * HOT_VIEWERS
        for i in range(3):  # now hot: held for the window, then one write
            await post(session, base, "hot", f"c{i}")
        rest = await asyncio.gather(*(v.comment_chunk(timeout=10.0) for v in viewers))
        assert rest == [[2, 3, 4]] * HOT_VIEWERS
    finally:
        for viewer in viewers:
            viewer.close()
