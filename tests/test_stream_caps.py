"""Stream caps: per process and per client address. Past a cap a stream is refused with
`too_many_streams` in a form its client retries later (EventSource: a 200 with a long
`retry:` and an in-band error; others: a 503), health checks and posts are still answered,
and the counts go back down as viewers leave."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from livecomments.edge.admission import fit_caps
from livecomments.edge.app import create_app
from tests import conftest
from tests.helpers import metric, post, status, until_metric
from tests.sse import SSEReader, close_streams, open_stream

EVENT_STREAM = {"Accept": "text/event-stream"}  # what every EventSource sends


async def _assert_refused(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(url) as r:  # a plain HTTP client: a 503 in the JSON error shape
        assert r.status == 503
        assert (await r.json())["error"]["code"] == "too_many_streams"
        assert int(r.headers["Retry-After"]) >= 20
    async with session.get(url, headers=EVENT_STREAM) as r:  # an EventSource: a 200 it will retry, later
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/event-stream"
        assert int(r.headers["Retry-After"]) >= 20
        stream = SSEReader(r)
        first = await stream.next()
        assert first.retry is not None and first.retry >= 20_000
        error = await stream.next()
        assert error.event == "error" and error.json()["error"]["code"] == "too_many_streams"
        with pytest.raises(EOFError):  # and the stream ends: EventSource reconnects after `retry`
            await stream.next()


async def test_streams_past_the_process_cap_are_refused_and_the_rest_still_answered(start_server, session):
    base = await start_server(max_streams=3)
    streams = [await open_stream(session, base, f"c{i}") for i in range(3)]
    await _assert_refused(session, f"{base}/v1/videos/c9/stream")
    assert await status(session, f"{base}/healthz") == 200
    await post(session, base, "c0", "still posting")
    assert (await streams[0].next_comment())["text"] == "still posting"
    assert await metric(session, base, "livecomments_connections") == 3
    for stream in streams:
        stream.close()
    await until_metric(session, base, "livecomments_connections", 0, timeout=5)
    # Every slot came back: as many streams open again.
    again = [await open_stream(session, base, f"c{i}") for i in range(3)]
    await _assert_refused(session, f"{base}/v1/videos/c9/stream")
    for stream in again:
        stream.close()


async def test_a_refused_stream_registers_no_viewer(start_server, session):
    base = await start_server(max_streams=1)
    await open_stream(session, base, "one")
    await _assert_refused(session, f"{base}/v1/videos/other/stream")
    assert await metric(session, base, "livecomments_connections") == 1
    assert await metric(session, base, "livecomments_watched_videos") == 1


async def test_loopback_peers_are_not_capped_per_address(start_server, session):
    base = await start_server(max_streams_per_address=2)  # a local proxy carries every viewer
    streams = [await open_stream(session, base, "lo") for _ in range(4)]
    assert await metric(session, base, "livecomments_connections") == 4
    for stream in streams:
        stream.close()


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (the one its default route uses)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP: no packet is sent, the kernel only picks a route
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


async def test_streams_past_the_per_address_cap_are_refused(tmp_path: Path):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    app = create_app(conftest.make_config(tmp_path, max_streams_per_address=2))
    server = TestServer(app, host=address, handler_cancellation=True)  # peers then have that address
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=10)) as session:
            first = [await open_stream(session, base, "nat") for _ in range(2)]
            await _assert_refused(session, f"{base}/v1/videos/other/stream")
            assert await status(session, f"{base}/healthz") == 200
            first[0].close()
            await until_metric(session, base, "livecomments_connections", 1, timeout=5)
            last = await open_stream(session, base, "nat")  # its slot came back
            await _assert_refused(session, f"{base}/v1/videos/nat/stream")
            for stream in (first[1], last):
                stream.close()
            await until_metric(session, base, "livecomments_connections", 0, timeout=5)
    finally:
        await server.close()


async def test_the_cap_fits_the_open_files_limit_and_health_checks_still_get_answers(spawn, tmp_path, monkeypatch):
    """A process whose hard open files limit is 400: the default caps (10,000 streams, 4,096
    connections) are lowered to share what is left once a quarter of the descriptors is kept
    spare (213 streams, 87 connections), so at the stream cap /healthz and posts are still answered."""
    caps = fit_caps(10_000, 4096, 1, 400)
    assert (caps.streams, caps.connections, caps.headroom) == (213, 87, 100)
    wrapper = tmp_path / "python-nofile-400"
    wrapper.write_text(f'#!/bin/sh\nexec prlimit --nofile=400:400 {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    monkeypatch.setattr(sys, "executable", str(wrapper))  # spawn() starts `sys.executable -m livecomments`
    server = spawn()
    base = server.url
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(sock_read=10)) as session:
        try:
            streams = []
            for start in range(0, caps.streams, 50):  # a few at a time: joining requests are connections in flight
                streams += await asyncio.gather(*(open_stream(session, base, f"f{i % 7}")
                                                  for i in range(start, min(start + 50, caps.streams))))
            await _assert_refused(session, f"{base}/v1/videos/f0/stream")
            assert await status(session, f"{base}/healthz") == 200
            await post(session, base, "f1", "at the cap")
            assert (await streams[1].next_comment())["text"] == "at the cap"
        finally:
            close_streams(session)
    log = server.log_path.read_text()
    assert "max_streams 10000 -> 213, max_connections 4096 -> 87" in log  # said so at start, once
    assert log.count("caps fitted to the open files limit") == 1
