"""The hub's repair never skips a seq that storage holds, whatever its read raced with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

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


async def test_a_comment_arriving_during_a_repair_read_does_not_skip_what_the_read_missed(
    pg_proxy, redis_server, start_server, session,
):
    """A repair's read began before comment 6 was stored; 6 never came by the broker (here:
    posted through a writer on another broker), and 7 arrived while the read was out. The
    read says nothing after 5: that must not make the hub skip 6 as "not in storage"."""
    base = await start_server(storage=await pg_proxy.start(), broker=redis_server.url, repair_interval=600)
    other_writer = await start_server(storage=pg_proxy.database)  # its own in-memory broker: `base` never hears it
    for i in range(5):
        await post(session, base, "v", f"{i}")
    viewer = await open_stream(session, base, "v")
    marker = await open_stream(session, base, "w")
    pg_proxy.arm()
    redis_server.stop()  # the broker link drops and comes back: the hub repairs every video
    redis_server.start()
    async with asyncio.timeout(15):
        await pg_proxy.holding.wait()  # v's repair read ran ("nothing after 5"); its answer waits
    await post(session, other_writer, "v", "6")
    await post(session, base, "v", "7")  # comes by the broker while the read is out: held
    await post(session, base, "w", "after 7")  # one channel, in order: once seen, 7 reached the hub
    assert (await marker.next_comment(timeout=15))["text"] == "after 7"
    pg_proxy.release()
    seqs: list[int] = []
    while 7 not in seqs:
        seqs.append((await viewer.next_comment(timeout=10))["seq"])
    assert seqs == [6, 7]
