"""The load generator of `bench transports`: the fan-out benchmark's own (fanout/loadgen.py) with
WebSocket viewers in place of SSE ones, and the post round trip over HTTP and over the socket.

Both transports go through one harness, step for step: this process runs fanout/loadgen.py's
`main` (idle memory, then the paced steps), and for `--transport ws` first points the two names
that module builds its viewers from (`LoadGen`, `Viewer`) at the WebSocket ones below. A
WebSocket viewer is as cheap as the SSE one: it counts comment frames with one `bytes.count` per
read, however many frames the read holds, and never parses a frame; the load generator must cost
less than the server it measures. One JSON object per line on stdout.

    python -m livecomments.benchmarks.transports.loadgen --transport ws --port P --pid PID --viewers 1000 --rates 10
    python -m livecomments.benchmarks.transports.loadgen --round-trips 1000 --port P
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
import time
from collections.abc import Callable
from typing import cast

import orjson
import uvloop

from livecomments.benchmarks.common import percentiles, raise_nofile
from livecomments.benchmarks.fanout import loadgen as base
from livecomments.benchmarks.fanout.loadgen import STAMP, LoadGen, Poster, Viewer, emit
from livecomments.core import wsframes

WS_REQUEST = (  # the upgrade; the key is any 16 bytes in base64 (RFC 6455 §4.1), ours needs no secrecy
    b"GET /v1/videos/hot/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
COMMENT, ACK, ERROR = b'{"type":"comment"', b'{"type":"ack"', b'{"type":"error"'  # how wsframes.py starts them
KEEP = len(COMMENT) - 1  # bytes kept from one read for the next: a pattern may straddle two reads
STAMP_KEEP = len(b"@1234567890123456@") - 1  # too short to hold a whole stamp: none is read twice
PONG = b"\x8a\x80\x00\x00\x00\x00"  # an empty pong; a client masks its frames (§5.3): key 0 leaves them as they are


def straddling(tail: bytes, data: bytes, pattern: bytes) -> int:
    """Occurrences of pattern that begin in tail (the previous read's end) and end in data: neither half
    of the joint can hold a whole one, so nothing data.count() finds is counted twice."""
    k = len(pattern) - 1
    return (tail[-k:] + data[:k]).count(pattern)


def masked_text(payload: bytes) -> bytes:
    """A client's text frame, masked with key 0."""
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
    return head + b"\x00\x00\x00\x00" + payload


class WsViewer(Viewer):
    """fanout's Viewer over a WebSocket. The only frames it answers are the server's pings (empty:
    wsframes.PING, from the hub's heartbeat and aiohttp's), with a pong: aiohttp closes a silent peer."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        tail = self.tail
        n = data.count(COMMENT) + straddling(tail, data, COMMENT)
        pings = data.count(wsframes.PING) + straddling(tail, data, wsframes.PING)
        self.tail = data[-KEEP:] if len(data) >= KEEP else (tail + data)[-KEEP:]
        self.frames += n
        self.gen.frames += n
        if pings:
            cast(asyncio.Transport, self.transport).write(PONG * pings)
        if self.head is not None:
            self.read_head(data)
        if not self.started:
            self.started = True
            self.gen.on_started()
        if self.sample:  # no newline ends a frame: keep what may be the start of a stamp instead
            buf = self.pending + data
            self.pending = buf[-STAMP_KEEP:]
            now = time.time_ns() // 1000
            self.gen.latencies.extend((int(t), now - int(t)) for t in STAMP.findall(buf))

    def read_head(self, data: bytes) -> None:
        """fanout's; and a viewer the server did not upgrade has its status line where its server would
        be (`refused: HTTP/1.1 503 …`), so the driver can say the server turned viewers away."""
        assert self.head is not None
        head = self.head + data
        super().read_head(data)
        if self.head is None and not head.startswith(b"HTTP/1.1 101"):
            self.served_by = "refused: " + head[: head.find(b"\r\n")].decode(errors="replace")


class WsLoadGen(LoadGen):
    def __init__(self, port: int, pids: list[int]) -> None:
        super().__init__(port, pids)
        self.stream_req = WS_REQUEST


def fan_out(argv: list[str], transport: str) -> None:
    """fanout/loadgen.py's run with this transport's viewers (its flags in argv)."""
    if transport == "ws":  # the names its LoadGen and connect() build from, in this process only
        setattr(base, "LoadGen", WsLoadGen)  # noqa: B010 - assigning a class to a name mypy reads as a type
        setattr(base, "Viewer", WsViewer)  # noqa: B010
    sys.argv[1:] = argv
    base.main()


# -- the post round trip ---------------------------------------------------------------------------


class HttpProbe(LoadGen):
    """A viewer of the video over SSE, and one keep-alive connection that POSTs (fanout's Poster)."""

    def __init__(self, port: int) -> None:
        super().__init__(port, [])
        self.answered = asyncio.Event()

    def on_idle(self, poster: Poster) -> None:  # the Poster read its answer (201 or an error, counted)
        self.answered.set()


class WsPoster(WsViewer):
    """A WebSocket viewer of the video that also posts on its socket, one post in flight."""

    def __init__(self, gen: LoadGen) -> None:
        super().__init__(gen, WS_REQUEST, False)
        self.answered = asyncio.Event()
        self.acks = self.errors = self.sent = 0

    def post(self) -> None:
        self.sent += 1
        body = {"type": "post", "author": "bench", "text": f"@{time.time_ns() // 1000}@", "id": f"rt-{self.sent}"}
        cast(asyncio.Transport, self.transport).write(masked_text(orjson.dumps(body)))

    def data_received(self, data: bytes) -> None:
        tail = self.tail  # before the viewer's count moves it on
        super().data_received(data)
        acks = data.count(ACK) + straddling(tail, data, ACK)
        errors = data.count(ERROR) + straddling(tail, data, ERROR)
        self.acks, self.errors = self.acks + acks, self.errors + errors
        if acks or errors:
            self.answered.set()


async def ask(send: Callable[[], None], answered: asyncio.Event, timeout: float = 10.0) -> float:
    """One post and its answer: seconds."""
    answered.clear()
    started = time.perf_counter()
    send()
    async with asyncio.timeout(timeout):
        await answered.wait()
    return time.perf_counter() - started


async def round_trips(port: int, n: int, warm: int = 5) -> dict[str, object]:
    """n posts over each transport, one at a time, alternating HTTP and WebSocket so both see the same
    server; each is answered (201 or ack) before the next. Both clients watch the video, so every post
    reaches the same two viewers whichever way it came."""
    loop = asyncio.get_running_loop()
    http = HttpProbe(port)
    (sse_viewer,) = await http.connect(1, 0)
    poster = Poster(http)
    await loop.create_connection(lambda: poster, "127.0.0.1", port)
    ws_gen = WsLoadGen(port, [])
    ws = WsPoster(ws_gen)
    await loop.create_connection(lambda: ws, "127.0.0.1", port)
    times: dict[str, list[float]] = {"http": [], "ws": []}
    for i in range(warm + n):  # the first `warm` of each: connections settling, the socket going live
        for name, send, answered in (("http", poster.post, http.answered), ("ws", ws.post, ws.answered)):
            took = await ask(send, answered)
            if i >= warm:
                times[name].append(took * 1000)
    posts = 2 * (warm + n)
    async with asyncio.timeout(10):  # every post reaches both viewers (or say what is missing)
        while min(sse_viewer.frames, ws.frames) < posts and not (http.lost or ws_gen.lost):
            await asyncio.sleep(0.01)
    lost = [f"{viewer} viewer missed {posts - got} comments"
            for viewer, got in (("SSE", sse_viewer.frames), ("WebSocket", ws.frames)) if got < posts]
    result: dict[str, object] = {"posts": n, "errors": http.errors + ws.errors, "lost": lost}
    for name, samples in times.items():
        p50, p99, top = percentiles(samples)
        result[name] = {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "max_ms": round(top, 3)}
    for transport in (poster.transport, sse_viewer.transport, ws.transport):
        if transport is not None:
            transport.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["sse", "ws"], default="sse")
    parser.add_argument("--round-trips", type=int, default=0, help="posts per transport (instead of the fan-out)")
    parser.add_argument("--port", type=int, required=True)
    args, rest = parser.parse_known_args()
    if not args.round_trips:
        fan_out(["--port", str(args.port), *rest], args.transport)
        return
    raise_nofile()
    try:
        emit(kind="round_trips", **uvloop.run(round_trips(args.port, args.round_trips)))
    except Exception as e:  # one line for the driver
        emit(kind="error", error=f"{type(e).__name__}: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
