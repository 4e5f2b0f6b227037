"""Heartbeats: one process-wide timer writes `: ping` to every live stream."""

from __future__ import annotations

import asyncio

from tests.fixtures.raw_stream import RawStream


async def test_every_stream_gets_pings(start_server):
    base = await start_server(ping_interval=0.1)
    viewers = [await RawStream.open(base, f"v{i % 2}") for i in range(4)]
    try:
        chunks = await asyncio.gather(*(v.chunk(timeout=2.0) for v in viewers))
        assert chunks == [b": ping\n\n"] * 4
    finally:
        for viewer in viewers:
            viewer.close()
