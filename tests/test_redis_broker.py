"""RedisBroker against a real redis-server: confirmation, FIFO, exact resubscription, faults."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Callable

import pytest

from livecomments.brokers.redis import RedisBroker
from tests.fixtures.processes import RedisProcess


class Recorder:
    """on_message / on_reset that tests can await on."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.arrived = asyncio.Event()
        self.resets = 0
        self.reset = asyncio.Event()

    def on_message(self, channel: str, data: bytes) -> None:
        self.messages.append((channel, data))
        self.arrived.set()

    def on_reset(self) -> None:
        self.resets += 1
        self.reset.set()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        async with asyncio.timeout(timeout):
            while len(self.messages) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.messages


async def until(pred: Callable[[], bool], timeout: float) -> None:
    """State with no event to await (readiness): poll it, bounded."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


def server_channels(redis: RedisProcess) -> set[str]:
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "pubsub", "channels"],
                         capture_output=True, text=True, timeout=5, check=True).stdout
    return set(out.split())


@pytest.fixture
async def broker(redis_server: RedisProcess) -> AsyncIterator[tuple[RedisBroker, Recorder]]:
    rec = Recorder()
    b = RedisBroker(redis_server.url)
    await b.start(rec.on_message, rec.on_reset)
    yield b, rec
    await b.close()


@pytest.fixture
async def writer(redis_server: RedisProcess) -> AsyncIterator[RedisBroker]:
    b = RedisBroker(redis_server.url)
    await b.start(None, lambda: None)
    yield b
    await b.close()


async def test_subscribe_is_confirmed_and_publish_keeps_call_order(broker, writer, redis_server):
    b, rec = broker
    await b.subscribe("lc:a", "lc:b")
    assert server_channels(redis_server) == {"lc:a", "lc:b"}  # confirmed before returning
    await asyncio.gather(*(writer.publish("lc:a" if i % 2 else "lc:b", b"%d" % i) for i in range(400)))
    got = await rec.wait_for(400)
    for channel in ("lc:a", "lc:b"):
        seq = [int(d) for c, d in got if c == channel]
        assert seq == sorted(seq) and len(seq) == 200
    await b.unsubscribe("lc:b")
    assert server_channels(redis_server) == {"lc:a"}


async def test_publish_never_waits_for_a_frozen_redis_and_keeps_order(broker, writer, redis_server):
    b, rec = broker
    await b.subscribe("lc:a")
    await writer.publish("lc:a", b"0")
    await rec.wait_for(1)
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)  # connected, answering nothing
    try:
        async with asyncio.timeout(0.5):  # the old publisher held each call up to its 2 s timeout
            for i in range(1, 21):
                await writer.publish("lc:a", b"%d" % i)
        assert writer.ready  # it never subscribes, so it holds no subscriber link
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    got = await rec.wait_for(21)
    assert [int(d) for _, d in got] == list(range(21))  # queued, then sent in call order


async def test_kill_and_restart_resubscribes_exactly_held_channels(broker, writer, redis_server):
    b, rec = broker
    await b.subscribe("lc:a", "lc:b", "lc:c")
    await b.unsubscribe("lc:b")
    assert b.ready
    redis_server.stop()
    await until(lambda: not b.ready, 5)
    assert "redis link down" in b.not_ready_reason
    with pytest.raises(ConnectionError):
        async with asyncio.timeout(5):  # refused (not waited out) while down, and not held afterwards
            await b.subscribe("lc:d")
    redis_server.start()
    async with asyncio.timeout(10):
        await rec.reset.wait()
    assert b.ready and b.not_ready_reason == ""
    assert server_channels(redis_server) == {"lc:a", "lc:c"}
    assert rec.resets == 1
    rec.messages.clear()
    await writer.publish("lc:c", b"after")  # the writer's link recovers too (it may take one backoff)
    assert await rec.wait_for(1) == [("lc:c", b"after")]


async def test_stale_but_connected_link_is_noticed_by_ping(broker, redis_server):
    b, rec = broker
    await b.subscribe("lc:a")
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)  # the socket stays open; nothing answers
    try:
        await until(lambda: not b.ready, 8)
        assert "PING" in b.not_ready_reason
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    async with asyncio.timeout(10):
        await rec.reset.wait()
    assert server_channels(redis_server) == {"lc:a"}


async def test_held_channels_are_subscribed_once_a_late_redis_comes_up(tmp_path):
    redis = RedisProcess(tmp_path / "late")  # its port is chosen; nothing listens there yet
    rec, b = Recorder(), RedisBroker(redis.url)
    try:
        await b.start(rec.on_message, rec.on_reset, held=["lc:all"])
        await until(lambda: "redis link down" in b.not_ready_reason, 5)
        assert not b.ready
        redis.start()
        async with asyncio.timeout(10):
            await rec.reset.wait()  # whatever was published before now must be read back
        assert b.ready and server_channels(redis) == {"lc:all"}  # ready only once it is held
        writer = RedisBroker(redis.url)
        await writer.start(None, lambda: None)
        await writer.publish("lc:all", b"late")
        assert await rec.wait_for(1) == [("lc:all", b"late")]
        await writer.close()
    finally:
        await b.close()
        redis.stop()
