"""A viewer that never reads is cut once its transport buffer passes the bound, and
counted; the others get every comment, and the fan-out never waits for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp.test_utils import TestServer

from livecomments.edge.app import create_app
from livecomments.edge.keys import HUB, METRICS
from livecomments.metrics import Metrics
from livecomments.model import Comment
from tests import conftest
from tests.fixtures.raw_stream import RawStream


def _slow_cut(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("livecomments_slow_viewers_disconnected_total")


async def test_slow_viewer_is_cut_and_counted_others_unaffected(tmp_path: Path):
    app = create_app(conftest.make_config(tmp_path, viewer_buffer=64 * 1024))
    server = TestServer(app, handler_cancellation=True)
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    slow = await RawStream.open(base, "v", rcvbuf=4096)  # never read from again
    fast = await RawStream.open(base, "v")
    try:
        hub, metrics = app[HUB], app[METRICS]
        text = "x" * 1900
        received: list[int] = []

        async def read_until(seq: int) -> None:
            while len(received) < seq:
                received.extend(await fast.comment_chunk())

        seq = 0
        async with asyncio.timeout(20):
            # Kernel buffers on loopback absorb a few MB before the transport buffers anything.
            while _slow_cut(metrics) == 0 and seq < 20_000:
                for _ in range(10):
                    seq += 1
                    hub.deliver(Comment("v", seq, "t", text, 0.0))  # what the strategy calls
                await read_until(seq)  # the fast viewer keeps up, so only the slow one grows
            for _ in range(10):  # after the cut, the fan-out goes on for the others
                seq += 1
                hub.deliver(Comment("v", seq, "t", text, 0.0))
            await read_until(seq)
        assert received == list(range(1, seq + 1))
        assert _slow_cut(metrics) == 1
        assert hub.viewer_count() == 1
    finally:
        slow.close()
        fast.close()
        await server.close()
