"""The dispatcher across real processes: a writer pushing to the realtime servers the registry
(a real redis-server, etcd or ZooKeeper) lists for a video, and only to those."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livecomments.backends import open_registry
from livecomments.registry.base import Registry
from tests.helpers import metric, post, until_status
from tests.sse import open_stream

SECRET = "s3cret"
RECEIVED = "livecomments_broker_messages_received_total"
PUSHES = "livecomments_dispatch_pushes_total"
FAILURES = "livecomments_dispatch_push_failures_total"


@pytest.fixture(params=["redis", "etcd", "zookeeper"])
def registry_server(request: pytest.FixtureRequest) -> Any:
    """A real redis-server, etcd or ZooKeeper: .url, .stop(), .start() (same port, same data)."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def registry_url(registry_server: Any) -> str:
    return str(registry_server.url)


@pytest.fixture
def cluster(spawn: Any, registry_url: str, tmp_path: Path) -> Any:
    """cluster(role) -> a started process of the dispatcher cluster sharing one storage."""

    def start(role: str) -> Any:
        # A realtime process takes pushes on a free port of its own (proc.push_url): what the registry lists.
        return spawn(
            "--role", role, "--strategy", "dispatcher", "--registry", registry_url,
            "--cluster-secret", SECRET, "--registry-ttl", "2", "--unwatch-linger", "0.1", "--repair-interval", "0.3",
            "--storage", f"sqlite:///{tmp_path}/lc.db",
        )

    return start


async def start_all(cluster: Any, *roles: str) -> list[Any]:
    """Start the processes side by side: each start blocks until it listens."""
    return list(await asyncio.gather(*(asyncio.to_thread(cluster, role) for role in roles)))


async def servers_of(registry: Registry, video: str, want: set[str], timeout: float = 10.0) -> None:
    """Until the registry lists exactly `want` for the video (lease expiry takes a few seconds)."""
    async with asyncio.timeout(timeout):
        while await registry.lookup(video) != want:
            await asyncio.sleep(0.1)


@pytest.fixture
async def registry(registry_url: str) -> Any:
    """A look at the registry from outside, with our own client (it registers nothing)."""
    reg = open_registry(registry_url, "http://test.invalid", 2.0)
    await reg.start(None, lambda: None)
    yield reg
    await reg.close()


async def test_pushes_only_to_servers_with_viewers(cluster: Any, session: Any, registry: Registry) -> None:
    writer, s1, s2, s3 = await start_all(cluster, "writer", "realtime", "realtime", "realtime")
    v1 = await open_stream(session, s1.url, "X")
    v2 = await open_stream(session, s2.url, "X")
    other = await open_stream(session, s3.url, "Y")  # s3 is registered, just not for X
    await servers_of(registry, "X", {s1.push_url, s2.push_url})

    sent = await post(session, writer.url, "X", text="goal!")
    assert (await v1.next_comment())["seq"] == sent["seq"]
    assert (await v2.next_comment())["text"] == "goal!"
    assert await metric(session, s1.url, RECEIVED) == 1
    assert await metric(session, s2.url, RECEIVED) == 1
    assert await metric(session, s3.url, RECEIVED) == 0
    assert await metric(session, writer.url, PUSHES) == 2
    assert await metric(session, writer.url, FAILURES) == 0

    await post(session, writer.url, "Y", text="elsewhere")
    assert (await other.next_comment())["text"] == "elsewhere"
    assert await metric(session, s1.url, RECEIVED) == 1
    assert await metric(session, s3.url, "livecomments_comments_discarded_total") == 0
    v2.close()
    await servers_of(registry, "X", {s1.push_url})  # the last viewer left: deregistered after the linger


async def test_killed_server_expires_and_its_viewers_miss_nothing(
    cluster: Any, session: Any, registry: Registry
) -> None:
    writer, s1, s2, s3 = await start_all(cluster, "writer", "realtime", "realtime", "realtime")
    v1 = await open_stream(session, s1.url, "X")
    v2 = await open_stream(session, s2.url, "X")
    await servers_of(registry, "X", {s1.push_url, s2.push_url})
    first = await post(session, writer.url, "X", text="one")
    assert (await v2.next_comment())["seq"] == first["seq"]

    s2.kill()
    v2.close()
    second = await post(session, writer.url, "X", text="two")  # still pushed to the dead s2: fails
    # The viewer's EventSource reconnects elsewhere with the last id it saw.
    moved = await open_stream(session, s3.url, "X", last_event_id=first["seq"])
    assert (await moved.next_comment())["seq"] == second["seq"]
    assert (await v1.comments(2))[1]["seq"] == second["seq"]

    await servers_of(registry, "X", {s1.push_url, s3.push_url})  # s2's lease ran out; nobody deregistered it
    failures = await metric(session, writer.url, FAILURES)
    third = await post(session, writer.url, "X", text="three")
    assert (await moved.next_comment())["seq"] == third["seq"]
    assert (await v1.next_comment())["seq"] == third["seq"]
    assert await metric(session, writer.url, FAILURES) == failures  # no push went to s2


async def test_a_joining_server_gets_what_a_stale_writer_cache_missed(
    cluster: Any, session: Any, registry: Registry
) -> None:
    """The writer has X cached with s1 only; s2 joins and a comment follows at once.
    Whether the push or the tail push after the change brings it, s2's viewer gets it
    without any later comment."""
    writer, s1, s2 = await start_all(cluster, "writer", "realtime", "realtime")
    v1 = await open_stream(session, s1.url, "X")
    await servers_of(registry, "X", {s1.push_url})
    await post(session, writer.url, "X", text="warm the cache")
    await v1.next_comment()
    for i in range(3):
        joined = await open_stream(session, s2.url, "X", last_event_id=0)
        sent = await post(session, writer.url, "X", text=f"right after join {i}")
        got = [c["seq"] for c in await joined.comments(sent["seq"])]
        assert got == list(range(1, sent["seq"] + 1))
        joined.close()
        await servers_of(registry, "X", {s1.push_url})


async def test_registry_outage_is_not_ready_then_recovers(
    cluster: Any, registry_server: Any, session: Any
) -> None:
    writer, s1 = await start_all(cluster, "writer", "realtime")
    viewer = await open_stream(session, s1.url, "X")
    await post(session, writer.url, "X", text="before")
    await viewer.next_comment()

    registry_server.stop()  # the lease cannot be renewed: a balancer must stop sending viewers
    await until_status(session, f"{s1.url}/readyz", 503)
    # A viewer arriving anyway gets a stream, served from storage while nobody can route to it.
    newcomer = await open_stream(session, s1.url, "Y")
    await post(session, writer.url, "Y", text="unroutable")
    assert (await newcomer.next_comment(timeout=10))["text"] == "unroutable"
    registry_server.start()  # an empty Redis has lost every registration: they must be put back
    await until_status(session, f"{s1.url}/readyz", 200)
    await until_status(session, f"{writer.url}/readyz", 200)
    await post(session, writer.url, "X", text="after")
    assert (await viewer.next_comment())["text"] == "after"
    await post(session, writer.url, "Y", text="routed again")
    assert (await newcomer.next_comment())["text"] == "routed again"


async def test_a_frozen_registry_does_not_hold_the_acknowledgement(
    cluster: Any, registry_server: Any, session: Any, registry: Registry
) -> None:
    """A video's first comment needs a registry lookup; the 201 must not wait for it."""
    writer, s1 = await start_all(cluster, "writer", "realtime")
    viewer = await open_stream(session, s1.url, "Z")
    await servers_of(registry, "Z", {s1.push_url})
    registry_server.proc.send_signal(signal.SIGSTOP)  # connected, answering nothing
    try:
        quick = aiohttp.ClientTimeout(total=0.5)  # the lookup alone used to hold the post for 1 s
        sent = [await post(session, writer.url, "Z", text=f"frozen {i}", timeout=quick) for i in range(3)]
    finally:
        registry_server.proc.send_signal(signal.SIGCONT)
    got = await viewer.comments(3, timeout=10)  # pushed once the lookup answers, else repaired
    assert [c["seq"] for c in got] == [c["seq"] for c in sent]
