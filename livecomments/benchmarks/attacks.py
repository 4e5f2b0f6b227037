"""The black-box attack run of issue 11: a real `livecomments serve` process, attacked as an
anonymous client would, while a legitimate client checks it is still answered.

    livecomments bench attacks              # the full run: writes benchmarks/results/attacks.md
    livecomments bench attacks --quick      # fewer sockets, short timeouts: a smoke run, into scratch/

Each phase opens its attack sockets, then times a legitimate /healthz, a POST and a stream
that receives that POST, then waits for the server to close the attack sockets; it reports
how many the server closed and when, and the server's RSS before and after.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from livecomments.benchmarks.common import Process, free_port, raise_nofile, rss_bytes
from livecomments.benchmarks.report import run_line
from livecomments.strategies.signing import PATH

SECRET = "attack-run-secret"
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Phase:
    name: str
    sockets: int
    closed: int
    slowest_close_s: float
    rss_before_mb: float
    rss_after_mb: float
    healthz_ms: float
    post_ms: float
    stream_ms: float


async def open_many(port: int, n: int) -> list[Conn]:
    conns: list[Conn] = []
    for _ in range(n):
        conns.append(await asyncio.open_connection("127.0.0.1", port))
    return conns


async def until_closed(conn: Conn, started: float, trickle: bytes, limit: float) -> float | None:
    """Seconds until the server closed the connection (None: still open after `limit`);
    meanwhile send `trickle` one byte a second and read (and drop) whatever comes."""
    reader, writer = conn

    async def send() -> None:
        for byte in trickle:
            writer.write(bytes([byte]))
            await asyncio.sleep(1.0)

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass
        return time.monotonic() - started
    except ConnectionError:  # reset: closed all the same
        return time.monotonic() - started
    except TimeoutError:
        return None
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()


async def legitimate(session: aiohttp.ClientSession, base: str, video: str) -> tuple[float, float, float]:
    """(healthz, post, post-to-stream) latency in ms; raises if any is not answered. The stream's
    is NaN when it was refused at the stream cap (a 200 with a long retry: and no comments)."""
    start = time.perf_counter()
    async with session.get(f"{base}/healthz") as r:
        assert r.status == 200, r.status
    healthz = time.perf_counter() - start
    async with session.get(f"{base}/v1/videos/{video}/stream", headers={"Accept": "text/event-stream"}) as stream:
        assert stream.status == 200, stream.status
        await stream.content.readuntil(b"\n\n")  # retry: the viewer is joined
        start = time.perf_counter()
        async with session.post(f"{base}/v1/videos/{video}/comments", json={"text": "legit", "author": "ana"}) as r:
            assert r.status == 201, r.status
        post = time.perf_counter() - start
        seen = math.nan
        async with asyncio.timeout(10):
            while frame := await stream.content.readuntil(b"\n\n"):
                if b"legit" in frame:
                    seen = time.perf_counter() - start
                    break
    return healthz * 1000, post * 1000, seen * 1000


async def phase(name: str, server: Process, port: int, n: int, first: bytes, trickle: bytes, limit: float,
                session: aiohttp.ClientSession, prepare: Callable[[list[Conn]], Awaitable[None]] | None = None) -> Phase:
    before = rss_bytes(server.pid)
    conns = await open_many(port, n)
    started = time.monotonic()
    for _, writer in conns:
        if first:
            writer.write(first)
    if prepare is not None:
        await prepare(conns)
    waits = asyncio.gather(*(until_closed(c, started, trickle, limit) for c in conns))
    await asyncio.sleep(0.5)  # the attack is in place
    healthz, post, seen = await legitimate(session, server.url, f"legit-{name.split()[0]}")
    peak = rss_bytes(server.pid)
    times = await waits
    closed = [t for t in times if t is not None]
    print(f"  {name}: {len(closed)}/{n} closed by the server", file=sys.stderr, flush=True)
    return Phase(name, n, len(closed), max(closed, default=0.0), before / 2**20, max(peak, rss_bytes(server.pid)) / 2**20,
                 healthz, post, seen)


async def stream_flood(server: Process, port: int, n: int, session: aiohttp.ClientSession) -> Phase:
    """n streams that never read, past the process' stream cap; they stay open (they are viewers)."""
    before = rss_bytes(server.pid)
    conns: list[Conn] = []
    for i in range(n):  # each asks right away: idle connections would meet the connection cap instead
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /v1/videos/flood{i % 50}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        conns.append((reader, writer))
    refused = 0
    for reader, _ in conns:
        async with asyncio.timeout(30):
            status = await reader.readline()
        refused += b" 503 " in status
    healthz, post, seen = await legitimate(session, server.url, "legit-flood")
    after = rss_bytes(server.pid)
    for _, writer in conns:
        writer.close()
    return Phase(f"stream flood ({refused} refused at the cap)", n, refused, 0.0, before / 2**20, after / 2**20,
                 healthz, post, seen)


async def run(quick: bool) -> list[Phase]:
    raise_nofile()
    n = 200 if quick else 1000
    header_timeout, body_timeout = (2, 3) if quick else (10, 30)
    max_streams = 300 if quick else 5000
    internal = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="lc-attacks-"))
    server = Process.serve(
        ["--port", "0", "--storage", f"sqlite:///{workdir}/lc.db", "--strategy", "dispatcher", "--registry", "memory://",
         "--cluster-secret", SECRET, "--internal-port", str(internal), "--header-timeout", str(header_timeout),
         "--body-timeout", str(body_timeout), "--max-streams", str(max_streams), "--log-level", "warning"],
        workdir / "server.log",
    ).listening()
    port = int(server.url.rsplit(":", 1)[1])
    phases: list[Phase] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await legitimate(session, server.url, "warmup")
            wait = header_timeout + 10
            phases.append(await phase("idle sockets", server, port, n, b"", b"", wait, session))
            phases.append(await phase("trickled headers", server, port, n, b"GET /healthz HTTP/1.1\r\n",
                                      b"Host: x\r\nX-Slow: " + b"a" * 60, wait, session))
            body_head = (b"POST /v1/videos/v/comments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 20000\r\n\r\n")
            phases.append(await phase("trickled bodies", server, port, n // 2, body_head, b'{"text": "' + b"a" * 60,
                                      body_timeout + 10, session))
            push_head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()

            async def send_big(conns: list[Conn]) -> None:
                chunk = b"x" * 65536
                for _ in range(8):  # 512 KB each, as fast as the server takes it
                    for _, writer in conns:
                        if not writer.is_closing():
                            writer.write(chunk)
                    await asyncio.sleep(0.01)

            phases.append(await phase("unsigned 4 MB pushes", server, internal, 200,
                                      push_head + b"Content-Length: 4000000\r\n\r\n", b"", 20, session, send_big))
            phases.append(await phase("unsigned 900 KB pushes", server, internal, 200,
                                      push_head + b"Content-Length: 900000\r\n\r\n", b"", 20, session, send_big))
            phases.append(await stream_flood(server, port, max_streams + (50 if quick else 500), session))
    finally:
        server.stop()
    return phases


def _stream_cell(ms: float) -> str:
    # No comment on the stream: at the stream cap a new viewer is turned away (200, retry: and an
    # error event, so its EventSource comes back later) and its stream ends at once.
    return "turned away (cap full)" if math.isnan(ms) else f"{ms:.1f}"


def table(phases: list[Phase]) -> str:
    rows = ["| attack | sockets | closed by the server | slowest close (s) | RSS before → peak (MB) "
            "| /healthz (ms) | POST (ms) | POST → stream (ms) |", "|---|---|---|---|---|---|---|---|"]
    for p in phases:
        rows.append(f"| {p.name} | {p.sockets} | {p.closed} | {p.slowest_close_s:.1f} | {p.rss_before_mb:.0f} → "
                    f"{p.rss_after_mb:.0f} | {p.healthz_ms:.1f} | {p.post_ms:.1f} | {_stream_cell(p.stream_ms)} |")
    return "\n".join(rows)


def write_report(phases: list[Phase], out: Path, quick: bool) -> tuple[str, bool]:
    """The table, printed and written to out/attacks.md; and whether every attack socket was closed."""
    text = table(phases)
    unclosed = [p.name for p in phases if not p.name.startswith("stream flood") and p.closed < p.sockets]
    mean = statistics.fmean(p.healthz_ms for p in phases)
    summary = (f"every legitimate request answered (mean /healthz {mean:.1f} ms); "
               f"attacks with sockets left open: {', '.join(unclosed) or 'none'}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "attacks.md").write_text(
        "# Attacks on one process (`livecomments bench attacks`)\n\n" + run_line(quick) + "\n\n"
        "A real `livecomments serve` (dispatcher, memory registry, SQLite, default limits but "
        "`max_streams = 5000`); each attack's sockets from loopback, then a legitimate /healthz, POST and "
        "stream timed while they are open.\n\n" + text + "\n\n" + summary + "\n"
    )
    return f"{text}\n\n{summary}\nwrote {out}/attacks.md", not unclosed
