"""The ZooKeeper registry by ZooKeeper's own rules, on real servers: a session the ensemble
expires (LOST) is opened anew and everything it held is put back; a three-member ensemble
loses its leader and the sessions, with their ephemeral znodes, live on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from livecomments.backends import missing_driver, open_registry
from livecomments.config import Config
from livecomments.ops.procs import free_port
from livecomments.registry.zookeeper import ZooKeeperRegistry, parse_url
from tests.fixtures.zookeeper import ZooKeeperProcess


class Recorder:
    """One process's registry with what it was told: on_change videos in a queue, resets counted."""

    def __init__(self, url: str, self_url: str, ttl: float = 2.0) -> None:
        self.registry = open_registry(url, self_url, ttl)
        self.changes: asyncio.Queue[str | None] = asyncio.Queue()
        self.resets = asyncio.Event()

    async def start(self, follows: bool) -> Recorder:
        await self.registry.start(self.changes.put_nowait if follows else None, self.resets.set)
        return self

    async def changed(self, video: str, timeout: float = 10.0) -> None:
        """Until on_change names the video (or says 'anything may have changed')."""
        async with asyncio.timeout(timeout):
            while await self.changes.get() not in (video, None):
                pass


@pytest.fixture
async def recorders() -> AsyncIterator[Callable[..., Any]]:
    made: list[Recorder] = []

    async def make(url: str, self_url: str, *, follows: bool = False, ttl: float = 2.0) -> Recorder:
        recorder = Recorder(url, self_url, ttl)
        made.append(recorder)
        return await recorder.start(follows)

    yield make
    for recorder in made:
        await recorder.registry.close()


async def until(predicate: Callable[[], Any], timeout: float = 15.0) -> None:
    """Polled: readiness and another process's view have no event to await."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


def test_url_forms() -> None:
    assert parse_url("zk://127.0.0.1:2181/lc") == ("127.0.0.1:2181", "/lc")
    assert parse_url("zk://a:1,b:2,c:3/x/y/") == ("a:1,b:2,c:3", "/x/y")
    assert parse_url("zk://a:1") == ("a:1", "/livecomments")
    with pytest.raises(ValueError):
        parse_url("zk:///lc")
    assert missing_driver("zk://127.0.0.1:2181/lc") == ""
    config = Config(role="realtime", strategy="dispatcher", registry="zk://127.0.0.1:2181/lc", cluster_secret="s")
    assert config.validate().registry == "zk://127.0.0.1:2181/lc"


async def test_no_ensemble_at_start_is_a_degraded_start() -> None:
    """Issue 22 (12): not refused, as a Redis broker is not; test_cli.py's degraded-start test heals one."""
    url = f"zk://127.0.0.1:{free_port()}/lc"
    registry = open_registry(url, "http://x.invalid", 1.0)
    try:
        async with asyncio.timeout(10):
            await registry.start(None, lambda: None)
        assert not registry.ready and registry.not_ready_reason.startswith(f"registry {url} unreachable")
        with pytest.raises(ConnectionError):
            await registry.register("X")  # fails fast: the hub serves the video from storage meanwhile
    finally:
        async with asyncio.timeout(10):
            await registry.close()


async def test_a_lost_session_is_opened_anew_and_everything_put_back(zookeeper_server, recorders) -> None:
    url = zookeeper_server.url
    holder = await recorders(url, "http://holder.invalid")
    writer = await recorders(url, "http://writer.invalid", follows=True)
    await holder.registry.register("X")
    await holder.registry.put_counts({"X": 3})
    assert await writer.registry.lookup("X") == {"http://holder.invalid"}  # leaves a watch on X
    assert await writer.registry.counts(["X"], others=True) == {"X": 3}

    # Expire the holder's session for real: another client takes it over and closes it.
    zk: ZooKeeperRegistry = holder.registry
    thief = KazooClient(hosts=parse_url(url)[0], client_id=zk._zk.client_id, timeout=2.0)
    await asyncio.to_thread(thief.start, 10)
    await asyncio.to_thread(thief.stop)
    thief.close()

    await writer.changed("X")  # the ephemeral znode went with the session: the watch fired
    async with asyncio.timeout(15):
        await holder.resets.wait()  # LOST, a new session, X put back: pushes may have been missed
    assert holder.registry.ready
    assert await writer.registry.lookup("X") == {"http://holder.invalid"}
    assert await writer.registry.counts(["X"], others=True) == {"X": 3}
    await holder.registry.deregister("X")
    await writer.changed("X")  # the lookup above watched X again
    assert await writer.registry.lookup("X") == frozenset()


async def test_an_ensemble_survives_its_leaders_death(tmp_path: Path, recorders) -> None:
    peers = [(free_port(), free_port()) for _ in range(3)]
    members = [ZooKeeperProcess(tmp_path / f"zk{i}", i, peers) for i in range(1, 4)]
    try:
        for member in members:
            member.start(wait=False)
        await asyncio.gather(*(asyncio.to_thread(m.wait_serving, 60) for m in members))
        url = "zk://" + ",".join(m.hostport for m in members) + "/lc"
        holder = await recorders(url, "http://holder.invalid", ttl=4.0)  # outlives an election
        writer = await recorders(url, "http://writer.invalid", follows=True, ttl=4.0)
        await holder.registry.register("X")
        assert await writer.registry.lookup("X") == {"http://holder.invalid"}

        leader = next(m for m in members if m.mode() == "leader")
        leader.stop()
        followers = [m for m in members if m is not leader]
        await until(lambda: asyncio.to_thread(lambda: any(m.mode() == "leader" for m in followers)), 30)

        async def both_ready() -> bool:
            return holder.registry.ready and writer.registry.ready

        await until(both_ready)
        assert not holder.resets.is_set()  # the session lived through the election: nothing to put back
        assert await writer.registry.lookup("X") == {"http://holder.invalid"}
        await holder.registry.register("Y")  # the new leader takes writes
        assert await writer.registry.lookup("Y") == {"http://holder.invalid"}
    finally:
        for member in members:
            member.stop()
