"""Every bound of the SSE stream, on the WebSocket stream: caps shared with SSE, the slow-viewer
byte bound, the input size limit, the origin check, refusals in the JSON error shape, shutdown."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from livecomments.edge.app import create_app
from tests import conftest
from tests.helpers import metric, post, until_metric
from tests.sse import open_stream
from tests.test_stream_caps import _non_loopback_address
from tests.ws import open_ws, stalled_ws

UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}


async def refusal(session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Try to upgrade; the status and the JSON error's code of the refusal."""
    key = base64.b64encode(os.urandom(16)).decode()
    async with asyncio.timeout(5):
        async with session.get(url, headers={**UPGRADE, "Sec-WebSocket-Key": key, **(headers or {})}) as r:
            assert r.status != 101, "upgraded"
            return r.status, (await r.json())["error"]["code"]


async def test_websockets_and_sse_streams_share_the_process_cap(start_server, session):
    base = await start_server(max_streams=2)
    sse = await open_stream(session, base, "cap")
    ws = await open_ws(session, base, "cap")
    assert await refusal(session, f"{base}/v1/videos/cap/ws") == (503, "too_many_streams")
    async with session.get(f"{base}/v1/videos/cap/stream") as r:  # and SSE counts the socket too
        assert r.status == 503
    await ws.ws.close()
    await until_metric(session, base, "livecomments_connections", 1, timeout=5)
    again = await open_ws(session, base, "cap")  # its slot came back
    assert again.greeting["viewers"] == 2
    sse.close()


async def test_open_websockets_leave_the_connection_cap_as_live_sse_streams_do(spawn, session):
    """max_connections bounds requests under way, not live streams: were an open socket still counted,
    a process would refuse viewers at max_connections (4,096) long before max_streams (10,000).
    The edge's own connection handling runs in `serve`, hence a real process."""
    base = spawn("--max-connections", "2", "--max-streams", "10").url
    sockets = [await open_ws(session, base, "many") for _ in range(4)]
    assert sockets[-1].greeting["viewers"] == 4
    async with session.get(f"{base}/v1/videos/many") as r:  # and requests are still answered
        assert r.status == 200
    for ws in sockets:
        await ws.ws.close()


async def test_websockets_past_the_per_address_cap_are_refused(tmp_path: Path):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    server = TestServer(create_app(conftest.make_config(tmp_path, max_streams_per_address=2)), host=address,
                        handler_cancellation=True)
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        async with aiohttp.ClientSession() as session:
            kept = [await open_ws(session, base, "nat"), await open_stream(session, base, "nat")]
            assert await refusal(session, f"{base}/v1/videos/nat/ws") == (503, "too_many_streams")
            await kept[0].ws.close()
            kept[1].close()
            await until_metric(session, base, "livecomments_connections", 0, timeout=5)
    finally:
        await server.close()


async def test_a_websocket_that_stops_reading_is_cut_at_the_bound(start_server, session):
    base = await start_server(viewer_buffer=64 * 1024, max_text=20_000)
    fast = await open_ws(session, base, "flood")
    slow = await stalled_ws(base, "flood")
    n, text = 400, "x" * 20_000  # ~8 MB: past the kernel's socket buffers and the 64 KiB bound
    try:
        reading = asyncio.create_task(fast.comments(n, timeout=30))  # the fast viewer keeps up
        for _ in range(n // 8):
            await asyncio.gather(*(post(session, base, "flood", text) for _ in range(8)))
        assert [c["seq"] for c in await reading] == list(range(1, n + 1))
        assert await metric(session, base, "livecomments_slow_viewers_disconnected_total") == 1
        await until_metric(session, base, "livecomments_connections", 1, timeout=5)
    finally:
        slow.close()


async def test_an_oversized_message_closes_the_socket_with_1009(start_server, session):
    base = await start_server()
    ws = await open_ws(session, base, "big")
    await ws.ws.send_str('{"type":"post","id":"1","author":"a","text":"' + "x" * 200_000 + '"}')
    async with asyncio.timeout(5):
        msg = await ws.ws.receive()
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await until_metric(session, base, "livecomments_connections", 0, timeout=5)


async def test_a_foreign_origin_is_refused_when_cors_origins_is_set(start_server, session):
    base = await start_server(cors_origins=("https://ok.example",))
    url = f"{base}/v1/videos/o/ws"
    assert await refusal(session, url, {"Origin": "https://evil.example"}) == (403, "origin_not_allowed")
    allowed = await session.ws_connect(url, headers={"Origin": "https://ok.example"})
    assert (await allowed.receive_json(timeout=5))["type"] == "viewers"
    await allowed.close()
    open_base = await start_server()  # no cors_origins: no origin check, as there is no CORS
    anywhere = await session.ws_connect(f"{open_base}/v1/videos/o/ws", headers={"Origin": "https://evil.example"})
    assert (await anywhere.receive_json(timeout=5))["type"] == "viewers"
    await anywhere.close()


async def test_shutdown_closes_sockets_as_going_away(tmp_path: Path):
    server = TestServer(create_app(conftest.make_config(tmp_path)), handler_cancellation=True)
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        ws = await open_ws(session, base, "bye")
        closing = asyncio.create_task(server.close())
        async with asyncio.timeout(10):
            msg = await ws.ws.receive()
            await closing
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.GOING_AWAY


async def test_a_websocket_under_serve_outlives_the_header_timeout(spawn, session):
    """Through the real public port (edge/server.py), a WebSocket's messages and pongs are not a
    next request's headers: after the upgrade the header timeout no longer applies. Before,
    the edge re-armed it on every message and cut the socket header_timeout later."""
    server = spawn("--header-timeout", "0.5", "--ping-interval", "5")
    ws = await open_ws(session, server.url, "ht")
    for i in range(4):  # messages both ways, spread over 4 header timeouts (the clock under test)
        assert (await ws.post(f"m{i}", id=f"ht-{i}"))["type"] == "ack"
        await asyncio.sleep(0.5)
    assert not ws.ws.closed
    assert [c["text"] for c in await ws.comments(4)] == ["m0", "m1", "m2", "m3"]
