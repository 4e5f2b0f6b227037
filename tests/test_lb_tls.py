"""lb-config's production front (issue 22 item 9, issue 19 item 4), against the real nginx and
HAProxy: HTTPS with HTTP/2 (a self-signed certificate made here with the openssl CLI), the
WebSocket routed by video exactly as the SSE stream, and X-Forwarded-For believed by servers
started with the `--trusted-proxies` that lb-config prints.

One system for the module: Redis, two realtime servers (role both: they also take posts, over
HTTP and over the socket) and both balancers over TLS in front of them. Every test posts from
loopback addresses of its own (127.0.0.N), since the servers rate-limit each client address.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from livecomments.ops.lbconfig import Balancer, render
from livecomments.ops.ring import HashRing
from tests.fixtures.nginx import Proxy
from tests.fixtures.processes import LivecommentsProcess, RedisProcess, free_port, sqlite_url
from tests.helpers import post, post_reply
from tests.sse import open_stream
from tests.ws import WSReader, open_ws

FORMATS = ["nginx", "haproxy"]
BURST = 3  # posts per client address before 429; refilled at 0.01/s: not within this module
_sources = itertools.count(10)


def source() -> str:
    """A loopback address no other test of the module posts from: a rate-limit bucket of its own."""
    return f"127.0.0.{next(_sources)}"


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def lb_config_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livecomments", "lb-config", *args],
                          capture_output=True, text=True, timeout=30)


@dataclass
class System:
    tls: tuple[Path, Path]
    backends: dict[str, str]  # server id -> HOST:PORT
    trust: str  # what lb-config printed after --trusted-proxies
    proxies: dict[str, Proxy]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    workdir = tmp_path_factory.mktemp("lb-tls")
    tls = make_certificate(workdir)
    ports = {f"rt{n}": free_port() for n in (1, 2)}
    backends = {sid: f"127.0.0.1:{port}" for sid, port in ports.items()}
    hosts = [a for addr in backends.values() for a in ("--backend", addr, "--writer", addr)]
    done = lb_config_cli(*hosts, "--workdir", str(workdir / "cli"))
    assert done.returncode == 0, done.stderr
    trust = re.search(r"--trusted-proxies (\S+)", done.stderr)
    assert trust is not None and len(done.stderr.strip().splitlines()) == 1, done.stderr
    redis = RedisProcess(workdir / "redis").start()
    started: list[LivecommentsProcess | Proxy] = []
    try:
        for sid, port in ports.items():
            started.append(LivecommentsProcess(
                ["--role", "both", "--strategy", "broadcast", "--broker", redis.url, "--storage",
                 sqlite_url(workdir / "lc.db"), "--server-id", sid, "--port", str(port),
                 "--trusted-proxies", trust.group(1), "--rate-limit-per-s", "0.01",
                 "--rate-limit-burst", str(BURST)], workdir / f"{sid}.log").start())
        addrs = list(backends.values())
        proxies = {fmt: Proxy(workdir / fmt, fmt, addrs, addrs, "hash", tls) for fmt in FORMATS}
        for proxy in proxies.values():
            started.append(proxy.start())
        yield System(tls, backends, trust.group(1), proxies)
    finally:
        for proc in reversed(started):
            proc.stop()
        redis.stop()


# Before CPython 3.12.8 (python/cpython#118960) a TLS transport that is closed leaks its socket
# when the peer never answers the shutdown; aiohttp then keeps such transports and aborts them
# when the session closes, if asked to (and warns when asked on a Python that needs no help).
NEEDS_CLEANUP_CLOSED = sys.version_info < (3, 12, 8) or (3, 13, 0) <= sys.version_info < (3, 13, 1)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A session from a loopback address of its own; the certificate is self-signed."""
    connector = aiohttp.TCPConnector(local_addr=(source(), 0), ssl=False, enable_cleanup_closed=NEEDS_CLEANUP_CLOSED)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(sock_read=30)) as s:
        yield s


def test_the_cli_prints_the_tls_configs_and_they_load(tmp_path: Path, system: System) -> None:
    cert, key = (str(p) for p in system.tls)
    hosts = ["--listen", "127.0.0.1:8443", "--backend", "127.0.0.1:9001", "--writer", "127.0.0.1:9000"]
    for fmt in FORMATS:
        wd = tmp_path / fmt
        done = lb_config_cli(*hosts, "--format", fmt, "--workdir", str(wd), "--tls-cert", cert, "--tls-key", key)
        assert done.returncode == 0, done.stderr
        assert done.stdout == render(Balancer("127.0.0.1:8443", ["127.0.0.1:9001"], ["127.0.0.1:9000"],
                                              workdir=str(wd), tls_cert=cert, tls_key=key), fmt)
        (tmp_path / f"{fmt}.conf").write_text(done.stdout)
    assert "listen 127.0.0.1:8443 ssl http2;" in (tmp_path / "nginx.conf").read_text()
    pem = tmp_path / "haproxy" / "livecomments-haproxy.pem"
    assert f"bind 127.0.0.1:8443 ssl crt {pem} alpn h2,http/1.1" in (tmp_path / "haproxy.conf").read_text()
    assert pem.stat().st_mode & 0o777 == 0o600
    assert pem.read_bytes() == system.tls[0].read_bytes().rstrip(b"\n") + b"\n" + system.tls[1].read_bytes()
    one_only = lb_config_cli(*hosts, "--tls-cert", cert)
    assert one_only.returncode != 0 and one_only.stdout == ""
    assert one_only.stderr.strip().splitlines() == [
        "Error: --tls-cert and --tls-key go together: give both, or neither for plain HTTP"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_alpn_offers_http2(fmt: str, system: System) -> None:
    context = ssl.create_default_context(cafile=str(system.tls[0]))
    context.set_alpn_protocols(["h2", "http/1.1"])
    proxy = system.proxies[fmt]
    with context.wrap_socket(socket.create_connection(("127.0.0.1", proxy.port), timeout=10),
                             server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_sse_stream_over_http2_gets_a_comment_at_once(fmt: str, system: System,
                                                               client: aiohttp.ClientSession) -> None:
    """curl speaks HTTP/2 (aiohttp does not): a stream over h2, unbuffered, then a post over https."""
    proxy, video = system.proxies[fmt], f"h2-{fmt}"
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-N", "-k", "--http2", "-D", "-", "--max-time", "30",
        f"{proxy.url}/v1/videos/{video}/stream", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert curl.stdout is not None
    try:
        async with asyncio.timeout(15):
            head = [await curl.stdout.readline()]  # the status line, then headers, then the body
            while not (line := await curl.stdout.readline()).startswith(b"retry:"):  # joined: a barrier
                assert line, head
                head.append(line)
            assert head[0].startswith(b"HTTP/2 200"), head
            assert any(h.lower().startswith(b"x-served-by: rt") for h in head), head
            stored = await post(client, proxy.url, video, text=f"over h2 via {fmt}")
            while (line := await curl.stdout.readline()) != b"event: comment\n":  # past viewer counts
                assert line
            line = await curl.stdout.readline()
        assert b'"text":"over h2 via ' + fmt.encode() + b'"' in line and f'"seq":{stored["seq"]}'.encode() in line
    finally:
        curl.kill()
        await curl.wait()


async def served_by_ws(session: aiohttp.ClientSession, base: str, video: str) -> tuple[str, WSReader]:
    """Open a WebSocket and return the X-Served-By of its 101 (seen by a trace hook) and the reader."""
    seen: list[str] = []

    async def on_end(_s: object, _c: object, params: aiohttp.TraceRequestEndParams) -> None:
        seen.append(params.response.headers.get("X-Served-By", "?"))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    trace.freeze()
    session.trace_configs.append(trace)
    try:
        reader = await open_ws(session, base, video)
    finally:
        session.trace_configs.remove(trace)
    return seen[-1], reader


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_websocket_lands_where_the_videos_stream_does(fmt: str, system: System,
                                                              client: aiohttp.ClientSession) -> None:
    proxy, videos = system.proxies[fmt], [f"ws-{fmt}-{i}" for i in range(10)]
    by_stream, by_socket = {}, {}
    for video in videos:
        stream = await open_stream(client, proxy.url, video)
        by_stream[video] = stream.resp.headers["X-Served-By"]
        by_socket[video], reader = await served_by_ws(client, proxy.url, video)
        stream.close()
        await reader.ws.close()
    assert by_socket == by_stream
    assert set(by_stream.values()) == set(system.backends), by_stream  # both backends hold videos
    if fmt == "nginx":  # nginx's ring is reproduced exactly (ops/ring.py)
        ring = HashRing(list(system.backends.values()))
        assert {v: system.backends[s] for v, s in by_stream.items()} == {v: ring.node_for(v) for v in videos}


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_websocket_through_the_balancer_receives_and_posts(fmt: str, system: System,
                                                                   client: aiohttp.ClientSession) -> None:
    proxy, video = system.proxies[fmt], f"wsio-{fmt}"
    reader = await open_ws(client, proxy.url, video)
    stream = await open_stream(client, proxy.url, video)  # an SSE viewer of the same video, same server
    sent = await post(client, proxy.url, video, text="posted over https")
    assert (await reader.next_of("comment", timeout=10))["seq"] == sent["seq"]
    ack = await reader.post("posted over the socket", id="p1")
    assert ack == {"type": "ack", "id": "p1", "seq": sent["seq"] + 1}
    assert (await stream.next_comment(timeout=10))["text"] == "posted over https"
    assert (await stream.next_comment(timeout=10))["text"] == "posted over the socket"
    stream.close()
    await reader.ws.close()


async def post_status(base: str, address: str, **headers: str) -> int:
    connector = aiohttp.TCPConnector(local_addr=(address, 0), ssl=False, enable_cleanup_closed=NEEDS_CLEANUP_CLOSED)
    async with aiohttp.ClientSession(connector=connector) as session:
        return (await post_reply(session, base, "limits", headers=headers)).status


@pytest.mark.parametrize("fmt", FORMATS)
async def test_clients_behind_the_balancer_are_limited_apart(fmt: str, system: System) -> None:
    """With the printed --trusted-proxies the servers take the client from X-Forwarded-For's
    rightmost hop: two clients get a bucket each, and a forged header moves neither."""
    assert system.trust == "127.0.0.1"
    url, first, second = system.proxies[fmt].url, source(), source()
    statuses = [await post_status(url, first) for _ in range(BURST)]
    statuses.append(await post_status(url, first, **{"X-Forwarded-For": second}))  # a lie, left of the truth
    assert statuses == [201] * BURST + [429]
    assert await post_status(url, second) == 201

