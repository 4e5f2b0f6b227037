"""A real `livecomments serve` under a low open files limit (issue 23 item 12): every cap is
fitted to the descriptors there are, said in one line at start, and a client holding more
idle connections than fit does not keep /healthz, a POST or the Redis publisher out."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livecomments.edge.admission import fit_caps
from tests.fixtures.processes import RedisProcess
from tests.helpers import post
from tests.sse import close_streams, open_stream
from tests.test_edge_connections import connect

NOFILE = 256
FLOOD = 300  # idle connections, more than the descriptors the process has


@pytest.fixture
def low_nofile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """spawn() starts `sys.executable -m livecomments`: make that run under prlimit."""
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    wrapper = tmp_path / f"python-nofile-{NOFILE}"
    wrapper.write_text(f'#!/bin/sh\nexec prlimit --nofile={NOFILE}:{NOFILE} {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))


async def hold_idle(url: str, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """n connections: the first half kept alive after an answered /healthz, the rest silent."""
    held = []
    for i in range(n):
        reader, writer = await connect(url)
        if i < n // 2:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(5):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        held.append((reader, writer))
    return held


async def test_idle_connections_past_the_fd_limit_leave_health_checks_posts_and_redis_working(
        low_nofile: None, spawn: Any, redis_server: RedisProcess) -> None:
    caps = fit_caps(10_000, 4096, 1, NOFILE)
    assert FLOOD > NOFILE > caps.connections
    server = spawn("--broker", redis_server.url, "--open-posting", "--header-timeout", "60", "--keepalive-timeout", "60")
    log = server.log_path.read_text()
    assert (f"caps fitted to the open files limit (ulimit -n {NOFILE}): max_streams 10000 -> {caps.streams}, "
            f"max_connections 4096 -> {caps.connections}") in log
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        viewer = await open_stream(session, server.url, "fd")
        held = await hold_idle(server.url, FLOOD)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                             timeout=aiohttp.ClientTimeout(total=10)) as fresh:
                async with fresh.get(f"{server.url}/healthz") as r:
                    assert r.status == 200
                await post(fresh, server.url, "fd", "past the flood")  # stored, then published through Redis
            assert (await viewer.next_comment())["text"] == "past the flood"  # the publisher had a descriptor
            async with asyncio.timeout(5):  # the oldest idle connections were closed to make room
                for reader, _ in held[:FLOOD - caps.connections]:
                    await reader.read()
                    assert reader.at_eof()
        finally:
            for _, w in held:
                w.close()
            close_streams(session)
    server.stop()
    log = server.log_path.read_text()
    assert "Too many open files" not in log and "out of system resource" not in log
    assert log.count("caps fitted to the open files limit") == 1
