"""The connection level of a real `livecomments serve` process (issue 11 items 2, 3, 10):
sockets that send nothing or trickle are closed within the timeouts, one address cannot take
every connection, oversized declared bodies are refused unread, parser errors are JSON."""

from __future__ import annotations

import asyncio
import ipaddress
import resource
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from tests.helpers import post
from tests.sse import open_stream

SLACK = 4.0  # seconds past a timeout within which the server must have closed


def address(url: str) -> tuple[str, int]:
    u = URL(url)
    assert u.host is not None and u.port is not None
    return u.host, u.port


async def connect(url: str, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address(url)
    return await asyncio.open_connection(host, port, local_addr=(source, 0))


async def closed_after(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, start: float,
                       trickle: bytes = b"") -> float:
    """Seconds from `start` until the server closed the connection (sending `trickle` one byte a time)."""
    async def send() -> None:
        for byte in trickle:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.25)  # the trickle's pace is what is under test: no event to await

    sender = asyncio.create_task(send())
    try:
        while True:
            try:
                if not await reader.read(65536):
                    break
            except ConnectionError:
                break
        return time.monotonic() - start
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()


async def raw_request(url: str, request: bytes, timeout: float = 5.0, source: str = "127.0.0.1") -> bytes:
    """Send `request` and read the whole answer until the server closes."""
    reader, writer = await connect(url, source)
    try:
        writer.write(request)
        async with asyncio.timeout(timeout):
            return await reader.read(1 << 20) + await reader.read()
    finally:
        writer.close()


@asynccontextmanager
async def from_address(source: str) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


async def test_idle_and_trickling_sockets_are_closed_within_the_timeouts(spawn: Any, session: Any) -> None:
    server = spawn("--header-timeout", "1", "--body-timeout", "2", "--max-connections-per-address", "0")
    start = time.monotonic()
    idle = [await connect(server.url) for _ in range(300)]
    headers = [await connect(server.url) for _ in range(100)]
    bodies = [await connect(server.url) for _ in range(100)]
    for _, writer in bodies:
        writer.write(b"POST /v1/videos/v/comments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n")
    body_start = time.monotonic()
    waits = [closed_after(r, w, start) for r, w in idle]
    waits += [closed_after(r, w, start, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100) for r, w in headers]
    body_waits = [closed_after(r, w, body_start, b'{"text": "' + b"a" * 100) for r, w in bodies]
    closing = asyncio.gather(*waits)
    body_closing = asyncio.gather(*body_waits)
    # meanwhile, legitimate requests are answered
    async with session.get(f"{server.url}/healthz") as r:
        assert r.status == 200
    await post(session, server.url, "v", "still answered")
    async with asyncio.timeout(30):
        header_times, body_times = await closing, await body_closing
    assert max(header_times) < 1 + SLACK, max(header_times)
    assert min(header_times) >= 0.9  # not closed before its time either
    assert max(body_times) < 2 + SLACK, max(body_times)
    assert min(body_times) >= 1.9


async def test_a_kept_alive_connection_gets_the_header_timeout_for_its_next_request(spawn: Any) -> None:
    server = spawn("--header-timeout", "1")
    reader, writer = await connect(server.url)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(5):
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        await reader.readuntil(b'"ok"}')
    await asyncio.sleep(1.5)  # idle between requests is the keep-alive timeout's, not the header timeout's
    start = time.monotonic()
    took = await closed_after(reader, writer, start, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100)
    assert 0.9 <= took < 1 + SLACK


def local_address() -> str | None:
    """A non-loopback address of this machine (loopback peers are not capped per address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        ip = str(s.getsockname()[0])
    return None if ipaddress.ip_address(ip).is_loopback else ip


async def test_one_address_cannot_take_every_connection(spawn: Any) -> None:
    ip = local_address()
    if ip is None:
        pytest.skip("no non-loopback address to connect from")
    server = spawn("--host", "0.0.0.0", "--open-posting", "--max-connections-per-address", "50",
                   "--max-connections", "120", "--header-timeout", "60")
    port = address(server.url)[1]
    external, loopback = f"http://{ip}:{port}", f"http://127.0.0.1:{port}"
    flood = [await connect(external, ip) for _ in range(50)]
    over = await raw_request(external, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", source=ip)
    assert over.startswith(b"HTTP/1.1 503")
    assert orjson.loads(over.partition(b"\r\n\r\n")[2])["error"]["code"] == "too_many_connections"
    async with from_address("127.0.0.1") as other:  # another client is still served
        async with other.get(f"{loopback}/healthz") as r:
            assert r.status == 200
        await post(other, loopback, "v", "from another address")
    for _, w in flood:
        w.close()
    # live streams leave the count: 60 viewers from the address, and it still gets answers
    async with from_address(ip) as same:
        viewers = []
        async with asyncio.timeout(20):
            while len(viewers) < 60:
                try:
                    viewers.append(await open_stream(same, external, "v"))
                except (aiohttp.ClientError, AssertionError):  # a flood socket not yet closed server-side
                    await asyncio.sleep(0.05)  # bounded polling: the server process closes them on its own time
        async with same.get(f"{external}/healthz") as r:
            assert r.status == 200
        for viewer in viewers:
            viewer.close()
    # the process-wide cap counts every address: 120 busy, the next connection is refused
    more = [await busy(loopback) for _ in range(120)]
    reader, writer = await connect(loopback)
    async with asyncio.timeout(5):
        assert (await reader.read()).startswith(b"HTTP/1.1 503")
    writer.close()
    for _, w in more:
        w.close()


async def busy(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection with a request under way: its handler waits for a body that does not come.
    The server's `100 Continue` says it has parsed the headers (so counts the request)."""
    reader, writer = await connect(url)
    writer.write(b"POST /v1/videos/v/comments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 30\r\nExpect: 100-continue\r\n\r\n")
    async with asyncio.timeout(5):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
    return reader, writer


async def test_at_the_cap_a_new_connection_takes_the_place_of_the_idlest(spawn: Any) -> None:
    """Idle connections (kept alive after a request, or connected and silent) do not keep a new
    one out at the process cap: the one idle longest is closed for it, as nginx does."""
    server = spawn("--open-posting", "--max-connections", "20", "--header-timeout", "60")
    kept = []
    for _ in range(10):  # kept alive after an answered request
        reader, writer = await connect(server.url)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        kept.append((reader, writer))
    silent = [await connect(server.url) for _ in range(20)]  # the last 10 of these take the place of `kept`
    busy_ones = [await busy(server.url) for _ in range(5)]  # ... and these of the first 5 silent ones
    try:
        async with asyncio.timeout(5):
            for reader, _ in kept + silent[:5]:  # closed by the server, oldest first
                await reader.read()
                assert reader.at_eof()
        async with from_address("127.0.0.1") as client:  # answered, not 503: an idle one makes room
            async with client.get(f"{server.url}/healthz") as r:
                assert r.status == 200
            await post(client, server.url, "v", "past idle connections")
        for reader, _ in busy_ones:  # busy connections are never taken
            assert not reader.at_eof()
    finally:
        for _, w in kept + silent + busy_ones:
            w.close()


async def test_expect_continue_with_a_body_over_the_limit_is_413_unread(spawn: Any) -> None:
    server = spawn()
    answer = await raw_request(server.url, b"POST /v1/videos/v/comments HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Type: application/json\r\nContent-Length: 99999999\r\n"
                               b"Expect: 100-continue\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "body_too_large"
    # the same without Expect: refused from the declared length, before the body is sent
    answer = await raw_request(server.url, b"POST /v1/videos/v/comments HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413")


MARK = b"ECHOMARK"
MALFORMED = [
    ("url over 8 KB", b"GET /" + MARK + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("control character in a header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + MARK + b"\x01\x7f\r\n\r\n"),
    ("unknown method", b"G" + MARK + b"{}T / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("bad version", b"GET / HTTP/" + MARK + b"\r\nHost: x\r\n\r\n"),
    ("header over 8 KB", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + MARK + b"a" * 9000 + b"\r\n\r\n"),
    ("not http", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc" + MARK + b"\r\n\r\n"),
]


@pytest.mark.parametrize(("case", "request_bytes"), MALFORMED, ids=[c[0] for c in MALFORMED])
async def test_parser_errors_are_json_without_echo_or_traceback(spawn: Any, case: str, request_bytes: bytes) -> None:
    server = spawn()
    answer = await raw_request(server.url, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", answer[:200]
    assert b"Content-Type: application/json" in head
    assert orjson.loads(body)["error"]["code"] == "bad_request"
    assert MARK not in answer
    server.stop()
    log = server.log_path.read_text()
    assert "Traceback" not in log and "Error handling request" not in log


async def test_serve_raises_the_open_file_soft_limit(spawn: Any) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 1024:
        pytest.skip("the hard open-file limit is already low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # inherited by the spawned process
    try:
        server = spawn()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert server.proc is not None
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)]
