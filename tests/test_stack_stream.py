"""The stream contract over every strategy × broker (tests/fixtures/stack.py STACKS): every
viewer gets every comment once and in order, a resume replays then goes live with no gap or
duplicate at the seam, a stalled viewer is cut without delaying the others, and a resume older
than storage is told so in band. Each test uses its own videos: the stack is shared per module.

The same cases over the WebSocket run on one multiprocess stack per strategy (WS_STACKS): the
transport is the edge's, the same on every broker. The DynamoDB stack runs the cases where
storage takes part, not the stalled-viewer floods (fan-out only, and slow to post on moto)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.fixtures.raw_stream import RawStream, stalled_stream
from tests.fixtures.stack import MAX_TEXT, Stack, StackSpec, stacks_where
from tests.helpers import metric, post, until_metric
from tests.sse import Event, SSEReader, open_stream
from tests.ws import WSReader, open_ws, stalled_ws

SLOW_CUT = "livecomments_slow_viewers_disconnected_total"
WS_STACKS = ("broadcast-redis", "partitioned-redis", "dispatcher-redis")


def on_sqlite(spec: StackSpec) -> bool:
    return spec.storage == "sqlite"


def over_ws(spec: StackSpec) -> bool:
    return spec.id in WS_STACKS


async def next_comment_or_reset(stream: SSEReader) -> Event:
    """The next comment or reset event, past heartbeats and viewer counts."""
    event = await stream.next()
    while event.event not in ("comment", "reset"):
        event = await stream.next()
    return event


async def assert_exactly(stream: SSEReader, seqs: list[int], timeout: float = 15.0) -> None:
    assert [c["seq"] for c in await stream.comments(len(seqs), timeout=timeout)] == seqs


async def flood_until_cut(stack: Stack, session: aiohttp.ClientSession, video: str,
                          keeps_up: Callable[[list[int]], Awaitable[None]]) -> None:
    """Big comments to `video` until the realtime process cuts its one stalled viewer, the fast
    viewer getting each (`keeps_up(seqs)`) meanwhile and after; exactly one viewer cut."""
    url = stack.realtime_url
    cut_before = await metric(session, url, SLOW_CUT)
    text = "x" * (MAX_TEXT - 10)
    sent = 0
    async with asyncio.timeout(45):
        # Loopback kernel buffers absorb a few MB before the server has to hold anything.
        while await metric(session, url, SLOW_CUT) == cut_before:
            assert sent < 400, "a stalled viewer was never cut"
            for _ in range(10):
                await post(session, stack.writer_url, video, text)
            sent += 10
            await keeps_up(list(range(sent - 9, sent + 1)))  # keeps up meanwhile
        for _ in range(5):  # after the cut the fan-out goes on for the others
            await post(session, stack.writer_url, video, "after")
        await keeps_up(list(range(sent + 1, sent + 6)))
    assert await metric(session, url, SLOW_CUT) == cut_before + 1


@dataclass(frozen=True)
class Transport:
    """How a scenario opens a viewer (resuming after `since`) and checks the seqs it gets next."""
    open: Callable[[aiohttp.ClientSession, str, str, int | None], Awaitable[Any]]
    exactly: Callable[[Any, list[int]], Awaitable[None]]


async def _open_sse(session: aiohttp.ClientSession, url: str, video: str, since: int | None) -> SSEReader:
    return await open_stream(session, url, video, last_event_id=since)


async def _open_ws(session: aiohttp.ClientSession, url: str, video: str, since: int | None) -> WSReader:
    ws = await open_ws(session, url, video, **({} if since is None else {"since": since}))
    ws.read_backlog_again()
    return ws


async def ws_assert_exactly(ws: WSReader, seqs: list[int], timeout: float = 15.0) -> None:
    assert [c["seq"] for c in await ws.comments(len(seqs), timeout=timeout)] == seqs


SSE = Transport(_open_sse, assert_exactly)
WS = Transport(_open_ws, ws_assert_exactly)


async def every_viewer_once_in_order(stack: Stack, session: aiohttp.ClientSession, over: Transport,
                                     hot: str, quiet: str) -> None:
    viewers = [await over.open(session, url, hot, None) for url in stack.realtime_urls for _ in range(2)]
    quiet_viewer = await over.open(session, stack.realtime_urls[-1], quiet, None)
    for i in range(20):
        await post(session, stack.writer_url, hot, f"c{i}")
        if i % 5 == 0:
            await post(session, stack.writer_url, quiet, f"q{i}")
    await post(session, stack.writer_url, hot, "end")  # a sentinel: anything extra shows up before it
    await post(session, stack.writer_url, quiet, "end")
    for viewer in viewers:
        await over.exactly(viewer, list(range(1, 22)))
    await over.exactly(quiet_viewer, list(range(1, 6)))


async def resume_seam(stack: Stack, session: aiohttp.ClientSession, over: Transport, video: str) -> None:
    """A resume from 10 races posts in flight on the writer: it replays, then goes live, with no
    gap and no duplicate at the seam."""
    for i in range(30):
        await post(session, stack.writer_url, video, f"old{i}")
    started = asyncio.Event()

    async def keep_posting() -> None:
        for i in range(40):
            await post(session, stack.writer_url, video, f"new{i}")
            started.set()

    poster = asyncio.create_task(keep_posting())
    async with asyncio.timeout(10):
        await started.wait()
    viewers = [await over.open(session, url, video, 10) for url in stack.realtime_urls]
    await poster
    for viewer in viewers:
        await over.exactly(viewer, list(range(11, 71)))


async def test_every_viewer_gets_every_comment_once_in_order(stack: Stack, session: aiohttp.ClientSession):
    await every_viewer_once_in_order(stack, session, SSE, "all-hot", "all-quiet")


async def test_resume_replays_then_goes_live_without_gap_or_duplicate(
    stack: Stack, session: aiohttp.ClientSession,
):
    await resume_seam(stack, session, SSE, "seam")


@stacks_where(on_sqlite)
async def test_a_stalled_viewer_is_cut_and_does_not_delay_the_others(
    stack: Stack, session: aiohttp.ClientSession,
):
    video, url = "flood", stack.realtime_url
    fast = await open_stream(session, url, video)
    slow = await RawStream.open(url, video, rcvbuf=4096)  # never read from again
    try:
        await flood_until_cut(stack, session, video, lambda seqs: SSE.exactly(fast, seqs))
    finally:
        slow.close()


@stacks_where(on_sqlite)
async def test_a_stalled_viewer_resuming_far_back_is_cut_during_catch_up(
    stack: Stack, session: aiohttp.ClientSession,
):
    """The backlog of a resume from 0 is megabytes; a viewer that never reads must be cut while
    it is being caught up, not held (with its backlog) for as long as it stays connected."""
    video, url = "backlog", stack.realtime_url
    text = "y" * (MAX_TEXT - 10)
    for _ in range(120):  # ~6 MB: past loopback's kernel buffers
        await post(session, stack.writer_url, video, text)
    cut_before = await metric(session, url, SLOW_CUT)
    slow = await stalled_stream(url, f"/v1/videos/{video}/stream", headers={"Last-Event-ID": "0"})
    try:
        await until_metric(session, url, SLOW_CUT, cut_before + 1, timeout=30)
    finally:
        slow.close()


async def test_a_resume_older_than_storage_gets_reset_then_the_oldest_kept(
    stack: Stack, session: aiohttp.ClientSession,
):
    video = "pruned"
    for i in range(10):
        await post(session, stack.writer_url, video, f"{i}")
    await stack.prune(video, 5)  # retention pruned the first five
    for url in stack.realtime_urls:
        stream = await open_stream(session, url, video, last_event_id=2)
        reset = await next_comment_or_reset(stream)
        assert reset.event == "reset" and reset.json() == {"oldest_seq": 6}
        await assert_exactly(stream, [6, 7, 8, 9, 10])
        stream.close()
    live = await open_stream(session, stack.realtime_url, video, last_event_id=10)
    await post(session, stack.writer_url, video, "live")
    await assert_exactly(live, [11])


async def test_a_resume_ahead_of_this_servers_feed_is_a_normal_resume(
    stack: Stack, session: aiohttp.ClientSession,
):
    """Last-Event-ID = a seq the writer acknowledged that this server has not seen (nobody was
    watching the video here): no reset, no duplicate, the next comment follows."""
    video = "ahead"
    for i in range(5):
        await post(session, stack.writer_url, video, f"{i}")
    streams = [await open_stream(session, url, video, last_event_id=5) for url in stack.realtime_urls]
    await post(session, stack.writer_url, video, "next")
    for stream in streams:
        event = await next_comment_or_reset(stream)
        assert (event.event, event.id) == ("comment", "6"), event.data


@stacks_where(lambda spec: spec.multiprocess)  # one process: its feed is its storage
async def test_a_resume_at_a_seq_the_feed_has_not_brought_yet_is_not_a_reset(
    stack: Stack, session: aiohttp.ClientSession,
):
    """A viewer already watches here, so the server tracks the video; a comment stored but not
    (yet) published leaves its feed behind storage. A viewer resuming at that seq (it saw it
    through another server) must get what follows, with no reset and no repeat."""
    video = "lagging"
    lossy = stack.start_lossy_writer()
    watchers = [await open_stream(session, url, video) for url in stack.realtime_urls]
    await post(session, stack.writer_url, video, "one")
    for watcher in watchers:
        await assert_exactly(watcher, [1])
    await post(session, lossy, video, "two")  # stored as 2, never published
    resumed = [await open_stream(session, url, video, last_event_id=2) for url in stack.realtime_urls]
    await post(session, stack.writer_url, video, "three")
    for stream in resumed:
        event = await next_comment_or_reset(stream)
        assert (event.event, event.id) == ("comment", "3"), event.data
    for watcher in watchers:  # and the watchers get 2 repaired from storage, then 3
        await assert_exactly(watcher, [2, 3])


@stacks_where(lambda spec: spec.owns_broker)
async def test_viewers_get_everything_through_a_broker_outage(stack: Stack, session: aiohttp.ClientSession):
    """The broker (or registry) is killed and restarted while comments are posted: posts are
    acknowledged throughout, a viewer that arrives meanwhile is served (200, from storage),
    and every viewer ends with every comment once, in order. Last in the module: it breaks
    the shared stack's broker, and leaves it ready again."""
    video = "outage"
    before = [await open_stream(session, url, video) for url in stack.realtime_urls]
    for i in range(5):
        await post(session, stack.writer_url, video, f"before{i}")
    stack.kill_broker()
    try:
        for i in range(5):
            await post(session, stack.writer_url, video, f"during{i}")
        during = [await open_stream(session, url, video, last_event_id=3) for url in stack.realtime_urls]
    finally:
        stack.restart_broker()
    for i in range(5):
        await post(session, stack.writer_url, video, f"after{i}")
    for stream in before:
        await assert_exactly(stream, list(range(1, 16)), timeout=30)
    for stream in during:
        await assert_exactly(stream, list(range(4, 16)), timeout=30)




@stacks_where(over_ws)
async def test_ws_every_viewer_gets_every_comment_once_in_order(stack: Stack, session: aiohttp.ClientSession):
    await every_viewer_once_in_order(stack, session, WS, "ws-all-hot", "ws-all-quiet")


@stacks_where(over_ws)
async def test_ws_resume_replays_then_goes_live_without_gap_or_duplicate(
    stack: Stack, session: aiohttp.ClientSession,
):
    await resume_seam(stack, session, WS, "ws-seam")


@stacks_where(over_ws)
async def test_ws_a_stalled_viewer_is_cut_and_does_not_delay_the_others(
    stack: Stack, session: aiohttp.ClientSession,
):
    video, url = "ws-flood", stack.realtime_url
    fast = await open_ws(session, url, video)
    slow = await stalled_ws(url, video)  # never read from again
    try:
        await flood_until_cut(stack, session, video, lambda seqs: WS.exactly(fast, seqs))
    finally:
        slow.close()


@stacks_where(over_ws)
async def test_ws_a_resume_older_than_storage_gets_reset_then_the_oldest_kept(
    stack: Stack, session: aiohttp.ClientSession,
):
    video = "ws-pruned"
    for i in range(10):
        await post(session, stack.writer_url, video, f"{i}")
    await stack.prune(video, 5)  # retention pruned the first five
    for url in stack.realtime_urls:
        ws = await open_ws(session, url, video, since=2)
        assert ws.opening[0] == {"type": "reset", "oldest_seq": 6}
        assert [m["seq"] for m in ws.opening[1:] if m["type"] == "comment"] == [6, 7, 8, 9, 10]
        await ws.ws.close()
    live = await open_ws(session, stack.realtime_url, video, since=10)
    await post(session, stack.writer_url, video, "live")
    await ws_assert_exactly(live, [11])
