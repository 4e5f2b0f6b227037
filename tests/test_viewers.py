"""Viewer counts: `event: viewers` and GET /v1/videos/{id}, summed over every realtime process,
on every strategy, with real Redis / etcd / ZooKeeper and real processes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livecomments.backends import open_registry
from tests.helpers import metric
from tests.sse import SSEReader

INTERVAL = "0.2"
SECRET = "s3cret"

Watch = Callable[[str, str], Awaitable[SSEReader]]


@pytest.fixture
async def watch(session: aiohttp.ClientSession) -> AsyncIterator[Watch]:
    """watch(base, video): a stream read up to its retry: frame (written once the viewer joined),
    so the count it is greeted with is the next frame. Closed at teardown."""
    opened: list[aiohttp.ClientResponse] = []

    async def open_(base: str, video: str) -> SSEReader:
        resp = await session.get(f"{base}/v1/videos/{video}/stream")
        opened.append(resp)
        assert resp.status == 200
        reader = SSEReader(resp)
        assert (await reader.next()).retry is not None
        return reader

    yield open_
    for resp in opened:
        resp.close()


async def counts_until(stream: SSEReader, want: int, timeout: float = 10.0) -> list[int]:
    """The viewer counts the stream is sent until `want`, repeats folded (a newcomer is told the
    count at once, and again if the next update for everyone carries the same number)."""
    seen: list[int] = []
    async with asyncio.timeout(timeout):
        while not seen or seen[-1] != want:
            event = await stream.next(timeout)
            if event.event == "viewers":
                assert event.id is None  # not part of the log: a resume never replays it
                n = event.json()["viewers"]
                if not seen or seen[-1] != n:
                    seen.append(n)
    return seen


async def video_viewers(session: aiohttp.ClientSession, base: str, video: str) -> int | None:
    async with session.get(f"{base}/v1/videos/{video}") as r:
        assert r.status == 200
        n: int | None = (await r.json())["viewers"]
        return n


async def until_video_viewers(session: aiohttp.ClientSession, base: str, video: str, want: int) -> None:
    async with asyncio.timeout(10):
        while await video_viewers(session, base, video) != want:
            await asyncio.sleep(0.05)


async def test_one_process_counts_its_viewers_as_they_come_and_go(start_server, session, watch):
    base = await start_server(viewers_interval=0.1)
    a = await watch(base, "v")
    first = await a.next()  # the newcomer is told at once, before anything changes
    assert (first.event, first.data, first.id) == ("viewers", '{"video_id":"v","viewers":1}', None)
    assert await video_viewers(session, base, "v") == 1
    b = await watch(base, "v")
    assert await counts_until(b, 2) == [2]
    assert await counts_until(a, 2) == [2]
    assert await video_viewers(session, base, "v") == 2
    b.close()
    assert await counts_until(a, 1) == [1]
    await until_video_viewers(session, base, "v", 1)
    assert await video_viewers(session, base, "other") == 0


async def test_an_unchanged_count_is_not_sent_again(start_server, session, watch):
    base = await start_server(viewers_interval=0.05, ping_interval=0.25)
    a = await watch(base, "v")
    assert await counts_until(a, 1) == [1]
    events = [await a.next() for _ in range(4)]  # ~1 s of pings: 20 count intervals went by
    assert [e.comments for e in events] == [["ping"]] * 4


# -- several realtime processes -------------------------------------------------------


SYSTEMS = ["broadcast", "partitioned-8", "partitioned-0", "dispatcher-redis", "dispatcher-etcd",
           "dispatcher-zookeeper"]


@pytest.fixture(params=SYSTEMS)
def system(request: pytest.FixtureRequest, spawn: Any, tmp_path: Path) -> Any:
    """system(role, *more_args) -> a started process; all share one SQLite file and one broker/registry."""
    name = request.param
    strategy, _, variant = name.partition("-")
    common = ["--strategy", strategy, "--storage", f"sqlite:///{tmp_path}/lc.db", "--viewers-interval", INTERVAL,
              "--unwatch-linger", "0.3"]
    if strategy == "dispatcher":
        server = request.getfixturevalue(f"{variant}_server")
        common += ["--registry", server.url, "--cluster-secret", SECRET, "--registry-ttl", "2"]
    else:
        server = request.getfixturevalue("redis_server")
        common += ["--broker", server.url, "--partitions", variant or "8"]

    def start(role: str, *more: str) -> Any:
        return spawn("--role", role, *common, *more)  # a dispatcher realtime process picks its own push port

    return start


async def test_counts_are_summed_over_every_process_and_a_stopped_or_killed_ones_viewers_leave(system, session, watch):
    """One system of four processes per strategy (each process costs seconds to start on a busy
    machine): counts summed everywhere, then a clean stop (its counts go at once), then a crash
    (its counts expire)."""
    slower = ("--viewers-interval", "0.5")  # a crashed server's counts last 2-3.5 s after it
    writer, rt1, rt2, rt3 = await asyncio.gather(*(asyncio.to_thread(system, role, *slower)
                                                   for role in ("writer", "realtime", "realtime", "realtime")))
    a = await watch(rt1.url, "v")
    assert await counts_until(a, 1) == [1]
    b = await watch(rt2.url, "v")
    assert await counts_until(a, 2) == [2]  # a viewer on the other server joined
    assert (await counts_until(b, 2))[-1] == 2  # the newcomer's server learns the others' count
    assert await video_viewers(session, rt1.url, "v") == 2
    assert await video_viewers(session, rt2.url, "v") == 2
    # A writer hears no channel: it asks the registry (dispatcher) or the counts Redis keeps (pub/sub).
    await until_video_viewers(session, writer.url, "v", 2)
    b.close()
    assert await counts_until(a, 1) == [1]
    await until_video_viewers(session, writer.url, "v", 1)
    assert await video_viewers(session, writer.url, "nobody") == 0
    # Counts are not comments: nothing was posted, so nothing was received, delivered or discarded.
    for name in ("broker_messages_received", "comments_delivered", "comments_discarded"):
        assert await metric(session, rt1.url, f"livecomments_{name}_total") == 0

    await watch(rt2.url, "v")
    crashing = [await watch(rt3.url, "v") for _ in range(2)]
    assert (await counts_until(a, 4))[-1] == 4
    await until_video_viewers(session, writer.url, "v", 4)
    loop = asyncio.get_running_loop()
    stopped = loop.time()
    rt2.proc.send_signal(signal.SIGTERM)  # it withdraws its counts as it goes, before it has drained
    assert await counts_until(a, 3) == [3]
    assert loop.time() - stopped < 2.0  # sooner than a crashed server's counts expire
    await until_video_viewers(session, writer.url, "v", 3)
    await asyncio.to_thread(rt2.stop)

    killed = loop.time()
    rt3.stop(signal.SIGKILL)
    for stream in crashing:
        stream.close()
    # pub/sub: 7 intervals after the last refresh (<= 3.5 s here); dispatcher: the lease (2 s) and a renewal
    assert await counts_until(a, 1, timeout=10) == [1]
    assert loop.time() - killed < 7
    assert await video_viewers(session, rt1.url, "v") == 1
    await until_video_viewers(session, writer.url, "v", 1)  # what the writer reads expires too


# -- the registries' counts -----------------------------------------------------------


@pytest.fixture(params=["redis", "etcd", "zookeeper"])
def registry_url(request: pytest.FixtureRequest) -> str:
    server = request.getfixturevalue(f"{request.param}_server")
    return str(server.url)


async def test_registry_counts_sum_live_processes_and_leave_out_one(registry_url):
    one = open_registry(registry_url, "http://one.invalid", 2.0)
    two = open_registry(registry_url, "http://two.invalid", 2.0)
    for reg in (one, two):
        await reg.start(None, lambda: None)
    try:
        for reg, n in ((one, 3), (two, 2)):
            await reg.register("v")
            await reg.put_counts({"v": n, "w": 1})
        assert await one.counts(["v", "w", "x"], others=False) == {"v": 5, "w": 2, "x": 0}
        assert await one.counts(["v", "w"], others=True) == {"v": 2, "w": 1}
        await two.put_counts({"v": 0, "w": 4})  # 0: none there any more
        assert await one.counts(["v", "w"], others=False) == {"v": 3, "w": 5}
    finally:
        await two.close()  # a clean stop: its counts go with it
    try:
        assert await one.counts(["v", "w"], others=False) == {"v": 3, "w": 1}
    finally:
        await one.close()


async def test_counts_travel_on_sharded_channels_of_a_redis_cluster(redis_cluster, spawn, session, watch, tmp_path):
    common = ["--role", "realtime", "--strategy", "partitioned", "--broker", redis_cluster.url, "--partitions", "0",
              "--storage", f"sqlite:///{tmp_path}/shared.db", "--viewers-interval", INTERVAL]
    rt1, rt2 = spawn(*common), spawn(*common)
    writer = spawn("--role", "writer", *common[2:])
    videos = [f"cv{i}" for i in range(6)]  # lc:v:<id> channels, spread over the masters by slot
    here = [await watch(rt1.url, v) for v in videos]
    for v in videos:
        await watch(rt2.url, v)
    for v, stream in zip(videos, here, strict=True):
        assert await counts_until(stream, 2) == [1, 2], v
        await until_video_viewers(session, rt2.url, v, 2)  # rt2 hears rt1's count an interval later
        await until_video_viewers(session, writer.url, v, 2)  # the counts Redis keeps, on v's own slot
