"""Writer and realtime processes over a real Redis, sharing one SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from livecomments.strategies.partitioned import partition_of
from tests.fixtures.processes import LivecommentsProcess, RedisProcess, Spawn, serve_args
from tests.helpers import metric, post, status, until_metric, until_status
from tests.sse import SSEReader, open_stream

PARTITIONS = 8
# Two videos in different partitions, so partitioned realtime processes listen to one, not both.
V1 = "v1"
V2 = next(f"v{i}" for i in range(2, 100) if partition_of(f"v{i}", PARTITIONS) != partition_of(V1, PARTITIONS))


def start_system(spawn: Spawn, strategy: str, broker: str, realtimes: int = 2,
                 *extra: str) -> tuple[LivecommentsProcess, list[LivecommentsProcess]]:
    """A writer and `realtimes` realtime processes over `broker`, sharing the test's SQLite file."""
    def args(role: str, *more: str) -> list[str]:
        return serve_args("--partitions", str(PARTITIONS), *more, *extra, role=role, strategy=strategy,
                          transport=broker)

    writer = spawn(*args("writer"))
    return writer, [spawn(*args("realtime", "--unwatch-linger", "0.3")) for _ in range(realtimes)]


async def assert_exactly(stream: SSEReader, seqs: list[int], sentinel: int) -> None:
    """Each seq once, in order, and nothing else before the sentinel comment."""
    got = [c["seq"] for c in await stream.comments(len(seqs) + 1)]
    assert got == [*seqs, sentinel]


@pytest.mark.parametrize("strategy", ["broadcast", "partitioned"])
async def test_viewers_on_every_realtime_process_see_the_writers_comments(
    strategy, spawn, redis_server, session,
):
    writer, (rt1, rt2) = start_system(spawn, strategy, redis_server.url)
    a1, a2 = [await open_stream(session, rt1.url, V1) for _ in range(2)]
    b1, b2 = await open_stream(session, rt2.url, V1), await open_stream(session, rt2.url, V2)
    for i in range(20):
        await post(session, writer.url, V1, text=f"c{i}")
        if i % 4 == 0:
            await post(session, writer.url, V2, text=f"d{i}")
    await post(session, writer.url, V1, text="end")
    await post(session, writer.url, V2, text="end")
    for stream in (a1, a2, b1):
        await assert_exactly(stream, list(range(1, 21)), 21)
    await assert_exactly(b2, list(range(1, 6)), 6)
    # rt1 has no viewer of V2: broadcast receives and discards its 6; partitioned never receives them.
    assert await metric(session, rt1.url, "livecomments_comments_delivered_total") == 42
    expected = (27, 6) if strategy == "broadcast" else (21, 0)
    assert await metric(session, rt1.url, "livecomments_broker_messages_received_total") == expected[0]
    assert await metric(session, rt1.url, "livecomments_comments_discarded_total") == expected[1]
    assert await metric(session, rt1.url, "livecomments_subscriptions") == 1
    rt2_channels = 1 if strategy == "broadcast" else 2
    assert await metric(session, rt2.url, "livecomments_subscriptions") == rt2_channels


def subscribe_calls(redis: RedisProcess) -> int:
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "info", "commandstats"],
                         capture_output=True, text=True, timeout=5, check=True).stdout
    for line in out.splitlines():
        if line.startswith("cmdstat_subscribe:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_partitioned_subscriptions_follow_viewers_without_churn(spawn, redis_server, session):
    _, (rt,) = start_system(spawn, "partitioned", redis_server.url, 1)
    videos = [f"w{i}" for i in range(12)]
    channels = {partition_of(v, PARTITIONS) for v in videos}
    streams = [await open_stream(session, rt.url, v) for v in videos]
    assert await metric(session, rt.url, "livecomments_subscriptions") == len(channels)
    assert await metric(session, rt.url, "livecomments_watched_videos") == len(videos)
    calls = subscribe_calls(redis_server)
    for _ in range(5):  # viewers come and go while each video keeps one: no (un)subscribe at all
        extra = [await open_stream(session, rt.url, v) for v in videos]
        for stream in extra:
            stream.close()
    assert subscribe_calls(redis_server) == calls
    for stream in streams:  # the last viewers go; within the linger they may come back for free
        stream.close()
    back = await open_stream(session, rt.url, videos[0])
    assert subscribe_calls(redis_server) == calls
    await until_metric(session, rt.url, "livecomments_subscriptions", 1)  # after the linger: one channel
    out = subprocess.run(["redis-cli", "-p", str(redis_server.port), "pubsub", "channels"],
                         capture_output=True, text=True, timeout=5, check=True).stdout
    assert out.split() == [f"lc:p:{partition_of(videos[0], PARTITIONS)}"]
    back.close()
    await until_metric(session, rt.url, "livecomments_subscriptions", 0)


@pytest.mark.parametrize("strategy", ["broadcast", "partitioned"])
async def test_redis_killed_and_restarted_loses_and_duplicates_nothing(
    strategy, spawn, redis_server, session,
):
    writer, rts = start_system(spawn, strategy, redis_server.url)
    streams = [await open_stream(session, rt.url, V1) for rt in rts for _ in range(2)]
    posted: list[int] = []

    async def post_some(n: int) -> None:
        for _ in range(n):
            posted.append((await post(session, writer.url, V1))["seq"])
            await asyncio.sleep(0.01)  # a steady trickle of posts, not a synchronisation

    await post_some(10)
    redis_server.stop()  # SIGKILL
    poster = asyncio.create_task(post_some(40))  # posting goes on while Redis is down
    for rt in rts:
        await until_status(session, f"{rt.url}/readyz", 503)
        async with session.get(f"{rt.url}/readyz") as r:
            assert (await r.json())["reason"] == "broker_unavailable"
        assert await status(session, f"{rt.url}/healthz") == 200
    redis_server.start()
    for rt in rts:
        await until_status(session, f"{rt.url}/readyz", 200)
    await poster
    # The writer's own link recovers within one backoff; until then its publishes are queued.
    await post_some(5)
    await post(session, writer.url, V1, text="end")
    assert posted == list(range(1, 56))
    for stream in streams:
        await assert_exactly(stream, posted, 56)
    # Whether a process needed storage for it depends on timing (the writer re-sends what it
    # queued during the outage, and a process resubscribed by then gets it from Redis), so the
    # repair count is not asserted here; exactly-once above is the guarantee.


def test_partition_is_the_same_in_processes_with_different_hash_seeds():
    code = ("from livecomments.strategies.partitioned import partition_of;"
            "print([partition_of(f'video-{i}', 64) for i in range(200)], hash('video-0'))")
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   timeout=30, check=True).stdout.rsplit(" ", 1))
    (parts1, hash1), (parts2, hash2) = outs
    assert hash1 != hash2  # the seeds did change Python's hash()...
    assert parts1 == parts2 == str([partition_of(f"video-{i}", 64) for i in range(200)])  # ...not ours


async def test_a_single_lost_message_is_repaired_from_storage(spawn, redis_server, session, tmp_path):
    """A second writer whose publishes go nowhere stands in for a message the broker dropped."""
    writer, (rt,) = start_system(spawn, "partitioned", redis_server.url, 1)
    dead = RedisProcess(tmp_path / "unused")  # a free port nobody listens on
    lossy = spawn(*serve_args("--partitions", str(PARTITIONS), role="writer", strategy="partitioned",
                              transport=dead.url))
    stream = await open_stream(session, rt.url, V1)
    await post(session, writer.url, V1)
    await post(session, lossy.url, V1)  # stored as seq 2, never published
    await post(session, writer.url, V1)
    await post(session, writer.url, V1)
    await assert_exactly(stream, [1, 2, 3], 4)
    # The repair reads everything after seq 1, so seq 3 may come from storage too.
    assert await metric(session, rt.url, "livecomments_gaps_repaired_total") >= 1


async def test_a_realtime_process_without_viewers_is_not_ready_while_redis_is_down(
    spawn, redis_server, session
):
    # Partitioned holds no channel until a viewer arrives; readiness must still follow the link.
    _, rts = start_system(spawn, "partitioned", redis_server.url, realtimes=1)
    rt = rts[0]
    await until_status(session, f"{rt.url}/readyz", 200)
    redis_server.stop()
    await until_status(session, f"{rt.url}/readyz", 503)
    assert await status(session, f"{rt.url}/healthz") == 200
    redis_server.start()
    await until_status(session, f"{rt.url}/readyz", 200)


@pytest.mark.parametrize("strategy", ["broadcast", "partitioned"])
async def test_a_realtime_process_started_before_redis_streams_from_storage_until_it_comes_up(
    strategy, spawn, session, tmp_path
):
    redis = RedisProcess(tmp_path / "late-redis")  # its port is chosen; nothing listens there yet
    try:
        writer, (rt,) = start_system(spawn, strategy, redis.url, 1, "--repair-interval", "0.3")
        async with session.get(f"{rt.url}/readyz") as r:
            assert r.status == 503 and (await r.json())["reason"] == "broker_unavailable"  # balancers send viewers elsewhere
        assert await status(session, f"{rt.url}/healthz") == 200
        # A viewer that comes anyway gets a stream (an EventSource gives up for good on a 503),
        # fed from storage by polling.
        stream = await open_stream(session, rt.url, V1)
        await post(session, writer.url, V1, text="while redis is down")
        assert [c["text"] for c in await stream.comments(1)] == ["while redis is down"]
        redis.start()
        await until_status(session, f"{rt.url}/readyz", 200)
        await post(session, writer.url, V1, text="late")
        await post(session, writer.url, V1, text="end")
        # live again, with no gap and no duplicate (the writer's queued publish of seq 1 may land now)
        await assert_exactly(stream, [2], 3)
    finally:
        redis.stop()


@pytest.mark.parametrize("strategy", ["broadcast", "partitioned"])
async def test_viewers_keep_receiving_through_a_redis_outage(strategy, spawn, redis_server, session):
    writer, (rt,) = start_system(spawn, strategy, redis_server.url, 1, "--repair-interval", "0.3")
    stream = await open_stream(session, rt.url, V1)
    await post(session, writer.url, V1, text="before")
    await assert_exactly(stream, [], 1)
    redis_server.stop()
    await until_status(session, f"{rt.url}/readyz", 503)
    for _ in range(3):
        await post(session, writer.url, V1)
    await assert_exactly(stream, [2, 3], 4)  # late but complete, in order, while Redis is still down
    joined = await open_stream(session, rt.url, V2)  # a newcomer during the outage gets a stream too
    await post(session, writer.url, V2)
    await assert_exactly(joined, [], 1)
    redis_server.start()
    await until_status(session, f"{rt.url}/readyz", 200)
    await post(session, writer.url, V1)
    await post(session, writer.url, V2)
    await assert_exactly(stream, [], 5)
    await assert_exactly(joined, [], 2)


async def test_posts_are_acknowledged_at_once_while_redis_is_frozen(spawn, redis_server, session):
    writer, (rt,) = start_system(spawn, "partitioned", redis_server.url, 1, "--repair-interval", "0.3")
    stream = await open_stream(session, rt.url, V1)
    await post(session, writer.url, V1)  # the writer's publishing link is up
    await assert_exactly(stream, [], 1)
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)  # connected, answering nothing
    try:
        # A client that gives up after 1 s would retry, and without an Idempotency-Key store a
        # duplicate: a committed comment is acknowledged without waiting for its publish.
        quick = aiohttp.ClientTimeout(total=1.0)
        for _ in range(5):
            await post(session, writer.url, V1, timeout=quick)
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    await post(session, writer.url, V1, text="end")
    await assert_exactly(stream, [2, 3, 4, 5, 6], 7)
