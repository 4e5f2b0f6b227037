"""Batching: when a video's comments go out, always in seq order, each once, one write per viewer
per pass. Paced (the default) writes a comment at once unless the loop is still busy with the
video's last passes; fixed holds every comment for a window; adaptive only a hot video's."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from livecomments.config import Config, ConfigError
from livecomments.core.fanout import Fanout
from livecomments.core.hub import _new_video
from livecomments.core.video import Video
from livecomments.core.viewer import Viewer, build_frame
from livecomments.metrics import Metrics
from livecomments.model import Comment
from tests.fixtures.raw_stream import SEQ, RawStream
from tests.helpers import post

WINDOW = 0.3


async def held_in_one_window(session: aiohttp.ClientSession, base: str, video: str,
                             viewers: list[RawStream], n: int) -> list[int]:
    """Post n comments; return the seqs that were surely held by the first window. The server
    runs on this loop and its clock: the first comment opens the window after `opened`, so its
    write comes at `opened + WINDOW` at the earliest, and a comment acknowledged before then
    was emitted while it was open (the in-process broker delivers before the post is answered).
    Asserts every viewer gets the same writes, in seq order, the first holding all those."""
    clock = asyncio.get_running_loop().time
    opened = clock()
    held = []
    for i in range(n):
        seq = (await post(session, base, video, f"c{i}", "t"))["seq"]
        if clock() < opened + WINDOW - 0.001:  # margin: a timer may fire a clock tick early
            held.append(seq)
    seen = []
    for viewer in viewers:
        writes = [await viewer.comment_chunk()]
        assert clock() - opened >= WINDOW - 0.05  # held for the window from the first comment
        while sum(map(len, writes)) < n:
            writes.append(await viewer.comment_chunk())
        assert [seq for write in writes for seq in write] == list(range(1, n + 1))  # seq order, each once
        assert writes[0][: len(held)] == held  # what came while the window was open: one write
        seen.append(writes)
    assert all(writes == seen[0] for writes in seen)  # the same writes for every viewer
    return held


async def burst(session: aiohttp.ClientSession, base: str, video: str, viewers: list[RawStream],
                n: int) -> list[list[int]]:
    """Post n comments at once (they reach the fan-out close together: one group commit, or a
    few); return the writes the first viewer got, asserting every viewer got the same writes
    and every comment once, in seq order."""
    await asyncio.gather(*(post(session, base, video, f"c{i}", "t") for i in range(n)))
    seen = []
    for viewer in viewers:
        writes = []
        while sum(map(len, writes)) < n:
            writes.append(await viewer.comment_chunk(timeout=10.0))
        assert [seq for write in writes for seq in write] == list(range(1, n + 1))  # seq order, each once
        seen.append(writes)
    assert all(writes == seen[0] for writes in seen)  # one write per viewer per pass, the same for all
    return seen[0]


async def open_viewers(base: str, video: str, n: int) -> list[RawStream]:
    return list(await asyncio.gather(*(RawStream.open(base, video) for _ in range(n))))


def close(viewers: list[RawStream]) -> None:
    for viewer in viewers:
        viewer.close()


# -- paced (the default) ---------------------------------------------------------


async def test_paced_writes_a_lone_comment_at_once(start_server, session):
    base = await start_server(batch_mode="paced", batch_ms=5000)  # a held comment would wait up to 5 s
    viewer = await RawStream.open(base, "lone")
    try:
        for i in range(3):
            seq = (await post(session, base, "lone", f"c{i}", "t"))["seq"]
            assert await viewer.comment_chunk(timeout=2.0) == [seq]  # its own write, well inside 5 s
    finally:
        viewer.close()


PACED_VIEWERS = 100  # a pass of a comment to them is real work (a write each), not a few µs


async def test_paced_coalesces_what_comes_while_the_loop_is_busy_writing(start_server, session):
    # A burst comes faster than passes to 100 viewers take: the first comments go at once, the
    # rest wait for the loop and go out together. A loaded machine may deliver a burst spread
    # thinly enough that no pass was due yet: a fresh video is tried then.
    base = await start_server(batch_mode="paced", batch_ms=5000)
    for attempt in range(10):
        viewers = await open_viewers(base, f"v{attempt}", PACED_VIEWERS)
        try:
            writes = await burst(session, base, f"v{attempt}", viewers, 30)
            assert len(writes[0]) == 1  # the first comment found the loop free: at once, alone
            if max(map(len, writes)) >= 2:
                return
        finally:
            close(viewers)
    pytest.fail("no pass coalesced two comments of a burst in 10 tries")


class Sockets:
    """Real TCP connections: the server ends are the viewers' transports, the client ends read."""

    def __init__(self) -> None:
        self.transports: list[asyncio.Transport] = []
        self.readers: list[asyncio.StreamReader] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self, n: int) -> None:
        accepted = asyncio.Queue[asyncio.Transport]()

        class Accept(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.put_nowait(transport)  # type: ignore[arg-type]

        server = await asyncio.get_running_loop().create_server(Accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, asyncio.timeout(10):
            for _ in range(n):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                self.readers.append(reader)
                self.writers.append(writer)
                self.transports.append(await accepted.get())

    def close(self) -> None:
        for transport in self.transports:
            transport.abort()
        for writer in self.writers:
            writer.transport.abort()


async def read_chunk_seqs(reader: asyncio.StreamReader, timeout: float) -> list[int]:
    async with asyncio.timeout(timeout):
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        return [int(s) for s in SEQ.findall(await reader.readexactly(size + 2))]


def live_video(transports: list[asyncio.Transport]) -> Video:
    video = _new_video("v")
    for transport in transports:
        viewer = Viewer("v", transport, chunked=True, max_buffer=1 << 20, gone=video.viewers.discard)
        viewer.go_live(0)
        video.viewers.add(viewer)
    return video


def frame(seq: int) -> tuple[int, bytes, bytes]:
    return build_frame(Comment("v", seq, "a", f"c{seq}", time.time()))


async def test_paced_holds_a_comment_at_most_batch_ms():
    # The video's last passes are unpaid for an hour, as after passes that cost that much CPU:
    # what comes now waits for the bound (batch_ms), not for the loop to be paid.
    sockets = Sockets()
    await sockets.open(3)
    try:
        fanout = Fanout(Metrics(), mode="paced", batch_ms=200, hot=1)
        video = live_video(sockets.transports)
        video.batch.paid_at = video.batch.next_pass = time.perf_counter() + 3600
        started = time.monotonic()
        fanout.emit(video, frame(1), time.time())
        fanout.emit(video, frame(2), time.time())
        for reader in sockets.readers:
            assert await read_chunk_seqs(reader, timeout=5.0) == [1, 2]  # one write, within 5 s, not an hour
        assert time.monotonic() - started >= 0.2 - 0.01  # held for the bound (a timer may fire a tick early)
        fanout.discard(video)
    finally:
        sockets.close()


@pytest.mark.parametrize("mode", ["paced", "fixed", "adaptive"])
async def test_batch_ms_0_writes_each_comment_alone_in_every_mode(start_server, session, mode):
    base = await start_server(batch_mode=mode, batch_ms=0, batch_hot=1)
    viewers = await open_viewers(base, "now", 20)
    try:
        writes = await burst(session, base, "now", viewers, 10)
        assert writes == [[seq] for seq in range(1, 11)]
    finally:
        close(viewers)


def test_an_unknown_batch_mode_is_refused():
    with pytest.raises(ConfigError, match="batch_mode must be one of paced, fixed, adaptive"):
        Config(batch_mode="sometimes").validate()


# -- fixed and adaptive windows ----------------------------------------------------


async def test_fixed_window_coalesces_in_order_and_holds_at_most_the_window(start_server, session):
    base = await start_server(batch_mode="fixed", batch_ms=WINDOW * 1000)
    # Coalescing is shown once a window held two or more comments: a loaded machine may post
    # fewer than two inside one, so a fresh video is tried then (no timing is asserted).
    for attempt in range(10):
        video = f"v{attempt}"
        viewers = [await RawStream.open(base, video) for _ in range(3)]
        try:
            held = await held_in_one_window(session, base, video, viewers, 5)
            if len(held) < 2:
                continue
            await post(session, base, video, "c5", "t")  # the window that was flushed does not hold it again
            for viewer in viewers:
                assert await viewer.comment_chunk() == [6]
            return
        finally:
            close(viewers)
    pytest.fail("no window held two comments in 10 tries")


async def test_adaptive_writes_a_quiet_video_at_once(start_server, session):
    base = await start_server(batch_mode="adaptive", batch_ms=5000)
    viewer = await RawStream.open(base, "quiet")
    try:
        for i in range(3):  # a small video: never held, even with comments close together
            seq = (await post(session, base, "quiet", f"c{i}", "t"))["seq"]
            assert await viewer.comment_chunk(timeout=2.0) == [seq]  # well inside the 5 s window
    finally:
        viewer.close()


HOT_VIEWERS = 64


async def test_adaptive_batches_a_hot_video_after_its_first_comment(start_server, session):
    # 64 viewers × 2 comments/s reaches batch_hot=100: the second comment makes the video hot
    base = await start_server(batch_mode="adaptive", batch_ms=4000, batch_hot=100)
    viewers = await open_viewers(base, "hot", HOT_VIEWERS)
    try:
        await post(session, base, "hot", "first", "t")  # 64 × 1/s: not hot yet, goes at once
        firsts = await asyncio.gather(*(v.comment_chunk(timeout=2.0) for v in viewers))  # < the window
        assert firsts == [[1]] * HOT_VIEWERS
        for i in range(3):  # now hot: held for the window, then one write
            await post(session, base, "hot", f"c{i}", "t")
        rest = await asyncio.gather(*(v.comment_chunk(timeout=10.0) for v in viewers))
        assert rest == [[2, 3, 4]] * HOT_VIEWERS
    finally:
        close(viewers)
