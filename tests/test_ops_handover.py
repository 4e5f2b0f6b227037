"""The live-stream hand-off from aiohttp to the Viewer (`let_go` in livecomments/edge/aiohttp_private.py)
relies on aiohttp internals. This pins what it must achieve, so an aiohttp upgrade that breaks it fails
here: once a stream is live, its handler has returned and aiohttp no longer tracks the connection, while
the viewer still gets every comment. pyproject.toml caps aiohttp at the versions this passed on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from livecomments.edge.app import create_app
from tests.conftest import make_config
from tests.helpers import post
from tests.sse import open_stream

STREAM_ROUTE = "/v1/videos/{video_id}/stream"


async def until_untracked(server: TestServer, timeout: float = 5.0) -> None:
    """aiohttp drops a connection from Server.connections when its handler task is done: no
    event is exposed for that, so poll the loop, bounded."""
    web_server = server.runner.server
    assert web_server is not None
    async with asyncio.timeout(timeout):
        while web_server.connections:
            await asyncio.sleep(0.01)


async def streams_answered(session: aiohttp.ClientSession, base: str) -> float:
    """Stream requests whose handler returned (the request middleware counts them on return)."""
    async with session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "livecomments_http_requests_total" and s.labels["route"] == STREAM_ROUTE)


async def test_a_live_stream_is_no_longer_held_by_aiohttp(tmp_path: Path, session: aiohttp.ClientSession):
    server = TestServer(create_app(make_config(tmp_path)), handler_cancellation=True)
    await server.start_server()
    # one connection per request for everything but the stream, so aiohttp's list holds only the stream's
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as requests:
        try:
            base = str(server.make_url("")).rstrip("/")
            stream = await open_stream(session, base, "handover")
            await until_untracked(server)  # the stream is open, and aiohttp holds no connection
            assert await streams_answered(requests, base) == 1  # its handler has returned
            for i in range(3):
                await post(requests, base, "handover", text=f"live {i}")
                assert (await stream.next_comment())["text"] == f"live {i}"  # the Viewer carries it on
            await until_untracked(server)
            stream.close()
        finally:
            await server.close()
