"""Many viewers resuming the same video at once share one storage read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from livecomments.backends import open_storage
from livecomments.brokers.memory import MemoryBroker
from livecomments.core.hub import Hub
from livecomments.metrics import Metrics
from livecomments.model import NewComment
from livecomments.strategies.broadcast import BroadcastStrategy
from tests.fixtures.pg_proxy import AnswerHoldingProxy
from tests.fixtures.postgres import PostgresServer
from tests.helpers import post
from tests.sse import open_stream


@pytest.fixture
async def pg_proxy(postgres_server: PostgresServer) -> AsyncIterator[AnswerHoldingProxy]:
    """Name it before start_server: it closes after the servers, so no pool sees it vanish."""
    proxy = AnswerHoldingProxy(postgres_server.database())
    yield proxy
    await proxy.close()


async def test_concurrent_resumes_share_one_read(tmp_path):
    storage = await open_storage(f"sqlite:///{tmp_path}/sf.db")
    try:
        for i in range(20):
            await storage.add(NewComment("v", "a", f"{i}"))
        metrics = Metrics()
        hub = Hub(storage, BroadcastStrategy(MemoryBroker(), metrics), metrics,
                  backlog_limit=100, linger=0.01, ping_interval=10)
        results = await asyncio.gather(*(hub.read_since("v", 5, 20) for _ in range(50)))
        assert [frame[0] for frame in results[0]] == list(range(6, 21))
        assert all(r is results[0] for r in results)  # one read, one list of frames, shared
        other = await hub.read_since("v", 5, 20)  # a later resume reads afresh
        assert other is not results[0] and other == results[0]
    finally:
        await storage.close()


async def test_many_viewers_resume_at_once_and_all_catch_up(start_server, session):
    base = await start_server()
    for i in range(30):
        await post(session, base, "crowd", f"{i}")
    streams = await asyncio.gather(*(open_stream(session, base, "crowd", last_event_id=10) for _ in range(40)))
    await post(session, base, "crowd", "live")
    for stream in streams:
        assert [c["seq"] for c in await stream.comments(21)] == list(range(11, 32))


async def test_a_resume_never_shares_a_read_older_than_its_join(pg_proxy, start_server, session):
    """A viewer joining after comment 6 reached the hub must not reuse a catch-up read that
    ran before 6 was stored: its live frames start after 6, so 6 would be lost (or, with the
    read empty, announced as `reset` although it is in storage)."""
    base = await start_server(storage=await pg_proxy.start(), repair_interval=600)  # no head checks meanwhile
    for i in range(5):
        await post(session, base, "v", f"{i}")
    live = await open_stream(session, base, "v")
    pg_proxy.arm()
    first = await open_stream(session, base, "v", last_event_id=5)  # its read ran: "nothing after 5"
    async with asyncio.timeout(10):
        await pg_proxy.holding.wait()  # ...and that answer is held
    await post(session, base, "v", "6")
    assert (await live.next_comment())["seq"] == 6  # the hub has 6: a join now gets head 6
    second = await open_stream(session, base, "v", last_event_id=5)  # its read is issued (barrier)
    pg_proxy.release()
    await post(session, base, "v", "7")
    for stream in (first, second):
        events: list[tuple[str, str | None]] = []
        async with asyncio.timeout(10):
            while ("comment", "7") not in events:
                ev = await stream.next()
                if ev.event in ("comment", "reset"):
                    events.append((ev.event, ev.id))
        assert events == [("comment", "6"), ("comment", "7")]
