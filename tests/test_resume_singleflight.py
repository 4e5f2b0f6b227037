"""Many viewers resuming the same video at once share one storage read."""

from __future__ import annotations

import asyncio

from livecomments.brokers.memory import MemoryBroker
from livecomments.hub import Hub
from livecomments.metrics import Metrics
from livecomments.model import NewComment
from livecomments.storage.base import open_storage
from livecomments.strategies.broadcast import BroadcastStrategy
from tests.helpers import post
from tests.sse import open_stream


async def test_concurrent_resumes_share_one_read(tmp_path):
    storage = await open_storage(f"sqlite:///{tmp_path}/sf.db")
    try:
        for i in range(20):
            await storage.add(NewComment("v", "a", f"{i}"))
        metrics = Metrics()
        hub = Hub(storage, BroadcastStrategy(MemoryBroker(), metrics), metrics,
                  backlog_limit=100, linger=0.01, ping_interval=10)
        results = await asyncio.gather(*(hub.read_since("v", 5) for _ in range(50)))
        assert [frame[0] for frame in results[0]] == list(range(6, 21))
        assert all(r is results[0] for r in results)  # one read, one list of frames, shared
        other = await hub.read_since("v", 5)  # a later resume reads afresh
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
