"""Heartbeats: one process-wide timer writes `: ping` to every live stream."""

from __future__ import annotations

import asyncio

from tests.fixtures.raw_stream import RawStream


async def next_ping(viewer: RawStream, timeout: float) -> bytes:
    """The next chunk that is not a viewer count (a newcomer is told the count at once)."""
    while (chunk := await viewer.chunk(timeout)).startswith(b"event: viewers"):
        pass
    return chunk


async def test_every_stream_gets_pings(start_server):
    base = await start_server(ping_interval=0.1)
    viewers = [await RawStream.open(base, f"v{i % 2}") for i in range(4)]
    try:
        chunks = await asyncio.gather(*(next_ping(v, 2.0) for v in viewers))
        assert chunks == [b": ping\n\n"] * 4
    finally:
        for viewer in viewers:
            viewer.close()


async def test_pings_are_spread_over_the_interval_not_written_in_one_pass(start_server):
    """One pass over every viewer stalls the loop for tens of ms at 10k viewers: each tick of
    the interval (~0.25 s) writes its own slice instead."""
    base = await start_server(ping_interval=1.0)
    viewers = [await RawStream.open(base, f"s{i}") for i in range(8)]
    loop = asyncio.get_running_loop()

    async def first_ping(viewer: RawStream) -> float:
        assert await next_ping(viewer, 5.0) == b": ping\n\n"
        return loop.time()

    try:
        times = await asyncio.gather(*(first_ping(v) for v in viewers))
        assert max(times) - min(times) >= 0.2  # at least two slices; one pass writes all in one instant
    finally:
        for viewer in viewers:
            viewer.close()
