"""The load generator: W raw-protocol SSE viewers and a paced poster, in one uvloop process.

It never parses SSE: it counts `event: comment` in the byte stream (the bound the
benchmark needs is "every viewer got every comment"), and only a sample of viewers
parses the send timestamps the comment text carries (`@<µs since epoch>@`) for the
post -> viewer latency. It reports its own CPU per step so a saturated client is
flagged rather than reported as the server's limit. Each viewer reads the X-Served-By header of
its response once, so the report can say how the viewers spread over several server processes.
One JSON object per line on stdout.

    python -m livecomments.benchmarks.fanout.loadgen --port P --pid SERVER_PID --viewers 1000 --rates 10,20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections import Counter
from typing import cast

import uvloop

from livecomments.benchmarks.common import cpu_seconds, raise_nofile, rss_bytes

PATTERN = b"event: comment"
TAIL = len(PATTERN) - 1
STAMP = re.compile(rb"@(\d{16})@")
SERVED_BY = re.compile(rb"\r\nx-served-by: *([^\r]*)\r\n", re.I)
HEAD_END = b"\r\n\r\n"
SAMPLES = 20  # viewers that parse timestamps; the rest only count
POSTERS = (
    32  # keep-alive connections posting comments, one request in flight each (group commit likes company)
)


class Viewer(asyncio.Protocol):
    __slots__ = ("gen", "request", "frames", "tail", "started", "sample", "pending", "transport", "head", "served_by")

    def __init__(self, gen: LoadGen, request: bytes, sample: bool) -> None:
        self.gen, self.request, self.sample = gen, request, sample
        self.frames, self.tail, self.started, self.pending = 0, b"", False, b""
        self.transport: asyncio.BaseTransport | None = None
        self.head: bytes | None = b""  # the response head until it is complete, then None
        self.served_by = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        # Count the pattern in data plus any occurrence straddling the previous read.
        n = data.count(PATTERN) + (self.tail + data[:TAIL]).count(PATTERN)
        self.tail = data[-TAIL:] if len(data) >= TAIL else (self.tail + data)[-TAIL:]
        self.frames += n
        self.gen.frames += n
        if self.head is not None:  # once per viewer: the head usually arrives whole, in the first read
            self.read_head(data)
        if not self.started:
            self.started = True
            self.gen.on_started()
        if self.sample:
            buf = self.pending + data
            cut = buf.rfind(b"\n") + 1
            self.pending = buf[cut:]
            now = time.time_ns() // 1000
            self.gen.latencies.extend((int(t), now - int(t)) for t in STAMP.findall(buf, 0, cut))

    def read_head(self, data: bytes) -> None:
        assert self.head is not None
        head = self.head + data
        end = head.find(HEAD_END)
        if end < 0:
            self.head = head[-4096:]
            return
        self.head = None
        match = SERVED_BY.search(head, 0, end + 2)
        if match:
            self.served_by = match.group(1).decode(errors="replace").strip()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost += 1


class Poster(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection with at most one POST in flight."""

    def __init__(self, gen: LoadGen) -> None:
        self.gen, self.buf, self.busy = gen, b"", False
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.ready.set_result(None)

    def post(self) -> None:
        assert self.transport is not None
        if self.transport.is_closing():  # the server dropped it: counted in connection_lost
            return
        body = b'{"author":"bench","text":"@%d@"}' % (time.time_ns() // 1000)
        self.busy = True
        self.transport.write(self.gen.post_head % len(body) + body)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buf[:head_end].lower()
        length = next(int(line[15:]) for line in head.split(b"\r\n") if line.startswith(b"content-length:"))
        if len(self.buf) < head_end + 4 + length:
            return
        if not head.startswith(b"http/1.1 201"):
            self.gen.errors += 1
        self.buf = self.buf[head_end + 4 + length :]
        self.busy = False
        self.gen.posted += 1
        self.gen.on_idle(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:  # a post got no answer
            self.gen.errors += 1
        if self in self.gen.idle:
            self.gen.idle.remove(self)


class LoadGen:
    def __init__(self, port: int, pids: list[int]) -> None:
        self.port, self.pids = port, pids
        self.post_head = (
            b"POST /v1/videos/hot/comments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        )
        self.stream_req = (
            b"GET /v1/videos/hot/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.frames = self.lost = self.posted = self.errors = self.due = self.issued = 0
        self.latencies: list[tuple[int, int]] = []  # (sent µs, latency µs)
        self.viewers: list[Viewer] = []
        self.posters: list[Poster] = []
        self.idle: list[Poster] = []
        self.n_started, self.want_started = 0, 0
        self.all_started = asyncio.Event()

    def on_started(self) -> None:
        self.n_started += 1
        if self.n_started >= self.want_started:
            self.all_started.set()

    def on_idle(self, poster: Poster) -> None:
        if self.due > 0:
            self.due -= 1
            poster.post()
        else:
            self.idle.append(poster)

    async def connect(self, n: int, sample_every: int) -> list[Viewer]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(200)
        self.want_started += n
        self.all_started.clear()

        async def one(i: int) -> Viewer:
            async with gate:
                viewer = Viewer(self, self.stream_req, sample_every > 0 and i % sample_every == 0)
                await loop.create_connection(lambda: viewer, "127.0.0.1", self.port)
                return viewer

        viewers = await asyncio.gather(*(one(i) for i in range(n)))
        async with asyncio.timeout(120):
            await self.all_started.wait()
        self.viewers.extend(viewers)
        return list(viewers)

    async def start_posters(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(POSTERS):
            poster = Poster(self)
            await loop.create_connection(lambda p=poster: p, "127.0.0.1", self.port)  # type: ignore[misc]
            self.posters.append(poster)
            self.idle.append(poster)

    async def post_at(self, rate: float, start: float, until: float) -> None:
        """Pace posts at `rate`/s from `start` (the first at once) until `until` seconds after it;
        posts the server cannot take at once queue up as `due`."""
        while (elapsed := time.monotonic() - start) < until:
            target = int(rate * elapsed) + 1
            self.due += target - self.issued
            self.issued = target
            while self.due > 0 and self.idle:
                self.due -= 1
                self.idle.pop().post()
            await asyncio.sleep(0.002)

    async def post_until_all_live(self, timeout: float = 20.0) -> None:
        """Post until every viewer has received a comment: a server may subscribe a stream
        a little after its first bytes (the peer does), so one post can miss some."""
        before = [v.frames for v in self.viewers]
        async with asyncio.timeout(timeout):
            while True:
                self.due += 1
                if self.idle:
                    self.due -= 1
                    self.idle.pop().post()
                for _ in range(100):
                    await asyncio.sleep(0.01)
                    if all(v.frames > b for v, b in zip(self.viewers, before, strict=True)):
                        return


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def step(
    gen: LoadGen, viewers: int, rate: float, warmup: float, duration: float, drain: float
) -> dict[str, object]:
    posted0 = gen.posted  # the previous step ended with no post in flight
    frames0 = gen.frames
    gen.latencies.clear()
    gen.issued, start = 0, time.monotonic()
    await gen.post_at(rate, start, warmup)
    ws, wf, wcpus, wlg, wposted = time.time(), gen.frames, list(map(cpu_seconds, gen.pids)), os.times(), gen.posted
    await gen.post_at(rate, start, warmup + duration)
    we, ef, ecpus, elg, eposted = time.time(), gen.frames, list(map(cpu_seconds, gen.pids)), os.times(), gen.posted
    wcpu, ecpu = sum(wcpus), sum(ecpus)
    backlog = gen.due
    gen.due = 0
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and any(p.busy for p in gen.posters):
        await asyncio.sleep(0.005)
    issued = gen.posted - posted0
    want = frames0 + issued * viewers
    while time.monotonic() < deadline and gen.frames < want and not gen.lost:
        await asyncio.sleep(0.005)
    window = we - ws
    delivered = ef - wf
    lats = sorted(lat for sent, lat in gen.latencies if ws * 1e6 <= sent <= we * 1e6)
    lg_cpu = (elg.user + elg.system - wlg.user - wlg.system) / window
    missing = want - gen.frames

    def p(q: float) -> float | None:
        return lats[min(len(lats) - 1, int(q * len(lats)))] / 1000 if lats else None

    return {
        "rate": rate,
        "viewers": viewers,
        "window_s": round(window, 3),
        "posts_per_s": round((eposted - wposted) / window, 1),
        "post_backlog": backlog,
        "deliveries_per_s": round(delivered / window),
        "expected_per_s": round(rate * viewers),
        "server_cpu_s": round(ecpu - wcpu, 3),
        "server_cpu_frac": round((ecpu - wcpu) / window, 3),
        "cpu_s_by_pid": {str(pid): round(e - w, 3) for pid, w, e in zip(gen.pids, wcpus, ecpus, strict=True)},
        "cpu_us_per_delivery": round((ecpu - wcpu) / delivered * 1e6, 3) if delivered else None,
        "p50_ms": p(0.5),
        "p99_ms": p(0.99),
        "max_ms": lats[-1] / 1000 if lats else None,
        "latency_samples": len(lats),
        "missing": missing,
        "lost_connections": gen.lost,
        "post_errors": gen.errors,
        "loadgen_cpu_frac": round(lg_cpu, 3),
        "loadgen_saturated": lg_cpu >= 0.9,
    }


def verdict(result: dict[str, object], rate: float) -> str:
    """Empty when the step was sustained; else why not (the first reason found)."""
    if result["lost_connections"]:
        return "viewers disconnected"
    if result["post_errors"]:
        return "posts failed"
    if result["missing"]:
        return "viewers fell behind"
    if int(result["post_backlog"]) > 2 + 0.1 * rate:  # type: ignore[call-overload]  # > 100 ms behind
        return "posts not accepted at the rate"
    # Against the posts that went out in the window: a short window holds few posts.
    if float(result["deliveries_per_s"]) < 0.9 * float(result["posts_per_s"]) * int(result["viewers"]):  # type: ignore[arg-type, call-overload]
        return "deliveries below the rate"
    p99 = result["p99_ms"]
    if p99 is None:
        return "no latency samples (window too short for the rate)"
    if float(p99) > 200:  # type: ignore[arg-type]
        return "p99 > 200 ms"
    return ""


async def run(args: argparse.Namespace) -> None:
    gen = LoadGen(args.port, args.pid)
    await gen.start_posters()
    # Warm the server (first viewer, first comment) before the baseline RSS.
    first = await gen.connect(1, 0)
    await gen.post_until_all_live()
    first[0].transport.close()  # type: ignore[union-attr]
    gen.viewers.clear()
    await asyncio.sleep(0.5)
    gen.lost = 0
    rss0 = sum(map(rss_bytes, args.pid))  # every server-side process: workers hold a share of the viewers each
    t = time.monotonic()
    await gen.connect(args.viewers, max(1, args.viewers // SAMPLES))
    connect_s = time.monotonic() - t
    await asyncio.sleep(1.0)
    rss1 = sum(map(rss_bytes, args.pid))
    emit(
        kind="memory",
        viewers=args.viewers,
        rss_none=rss0,
        rss_idle=rss1,
        connect_s=round(connect_s, 2),
        bytes_per_viewer=round((rss1 - rss0) / args.viewers),
        served_by=dict(Counter(v.served_by for v in gen.viewers)),
    )
    # Fresh posters: servers close keep-alive connections left idle while viewers connected.
    for poster in gen.posters:
        assert poster.transport is not None
        poster.transport.close()
    gen.posters, gen.idle = [], []
    await gen.start_posters()
    await gen.post_until_all_live()  # every viewer live before the first step
    while any(p.busy for p in gen.posters):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    for rate in args.rates:
        result = await step(gen, args.viewers, rate, args.warmup, args.duration, args.drain)
        result["failed"] = verdict(result, rate)
        emit(kind="step", **result)
        if result["failed"]:
            break
        await asyncio.sleep(0.2)
    for viewer in gen.viewers:
        viewer.transport.close()  # type: ignore[union-attr]
    for poster in gen.posters:
        assert poster.transport is not None
        poster.transport.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, action="append", required=True, help="server pids (first: RSS)")
    parser.add_argument("--viewers", type=int, required=True)
    parser.add_argument("--rates", type=lambda s: [float(r) for r in s.split(",")], required=True)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--drain", type=float, default=2.0)
    args = parser.parse_args()
    raise_nofile()
    try:
        uvloop.run(run(args))
    except Exception as e:  # one line for the driver, not a traceback per viewer
        emit(kind="error", error=f"{type(e).__name__}: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
