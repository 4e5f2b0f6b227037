"""The eager sample of a hot video's viewers: each comment's seq checked and its trip timed.

A few hundred viewers read through the load generator's loop. Each one checks that the comments
it gets are the seqs that follow the last it got (none lost, none twice), and times comments from
their post (the `@<µs since epoch>@` their text carries) to their arrival. Per comment, the first
and the last arrival over the sample give the serial send: the server writes its viewers one after
another. Only every `stride`-th comment is timed, so parsing stays cheap at any rate.
"""

from __future__ import annotations

import asyncio
import re
import time
from array import array
from typing import Any

import numpy as np

PATTERN = b"event: comment"
FIRST = re.compile(rb"id: (\d+)\nevent: comment")
STAMP = re.compile(rb"@(\d{16})@")
SERVED_BY = re.compile(rb"\r\nx-served-by: *([^\r]*)\r\n", re.I)
TIMED = 20_000  # arrivals per second the sample times at most (the stride keeps it there)


class Timings:
    """What the sample saw of one step: per comment its post and its first and last arrival."""

    def __init__(self) -> None:
        self.comments: dict[int, list[int]] = {}  # seq -> [sent, first arrival, last arrival, arrivals] (µs)
        self.sent, self.latency = array("q"), array("q")  # one per arrival timed
        self.stride = 1  # comments whose seq is a multiple of it are timed
        self.lost = 0  # sample viewers whose connection ended

    def reset(self, rate: float, viewers: int) -> None:
        self.comments.clear()
        del self.sent[:], self.latency[:]
        self.stride = max(1, -(-int(rate * viewers) // TIMED))

    def arrived(self, seq: int, sent: int, now: int) -> None:
        c = self.comments.get(seq)
        if c is None:
            self.comments[seq] = [sent, now, now, 1]
        else:
            c[1], c[2], c[3] = min(c[1], now), max(c[2], now), c[3] + 1
        self.sent.append(sent)
        self.latency.append(now - sent)

    def summary(self, start: float, end: float, viewers: int) -> dict[str, Any]:
        """p50/p99/max post → arrival of comments posted in [start, end] (s since the epoch), and the median
        over them of the first arrival, the last, and the gap between (comments every viewer timed)."""
        lo, hi = start * 1e6, end * 1e6
        sent, latency = np.frombuffer(self.sent, dtype=np.int64), np.frombuffer(self.latency, dtype=np.int64)
        lats = np.sort(latency[(sent >= lo) & (sent <= hi)]) / 1000
        whole = [c for c in self.comments.values() if c[3] == viewers and lo <= c[0] <= hi]

        def p(q: float) -> float | None:
            return round(float(lats[min(len(lats) - 1, int(q * len(lats)))]), 1) if len(lats) else None

        def median(values: list[int]) -> float | None:
            return round(float(np.median(values)) / 1000, 1) if values else None

        return {"p50_ms": p(0.5), "p99_ms": p(0.99), "max_ms": p(1.0), "latency_samples": len(lats),
                "first_ms": median([c[1] - c[0] for c in whole]), "last_ms": median([c[2] - c[0] for c in whole]),
                "serial_ms": median([c[2] - c[1] for c in whole]), "timed_every": self.stride}


class Sample(asyncio.Protocol):
    """One eager viewer."""

    def __init__(self, timings: Timings, request: bytes) -> None:
        self.timings, self.request = timings, request
        self.pending, self.last, self.count, self.disorder = b"", 0, 0, 0
        self.served_by = "?"
        self.head: bytes | None = b""  # until the response head is complete
        self.live = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time_ns() // 1000
        if self.head is not None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 200"):
                line = self.head.split(b"\r\n", 1)[0].decode(errors="replace")
                self.live.set_exception(ConnectionError(f"stream refused: {line}"))
                self.head = None
                return
            match = SERVED_BY.search(self.head, 0, end + 2)
            self.served_by = match.group(1).decode(errors="replace").strip() if match else "?"
            data, self.head = self.head[end + 4 :], None
            self.live.set_result(None)
        buf = self.pending + data
        cut = buf.rfind(b"\n\n") + 2 if b"\n\n" in buf else 0
        self.pending = buf[cut:]
        n = buf.count(PATTERN, 0, cut)
        if not n:
            return
        # The comments of one read are seqs first..last, each once: else one was lost or came twice.
        first = int(FIRST.search(buf, 0, cut).group(1))  # type: ignore[union-attr]
        at = buf.rfind(b"id: ", 0, cut)
        last = int(buf[at + 4 : buf.index(b"\n", at)])
        if (self.last and first != self.last + 1) or last != first + n - 1:
            self.disorder += 1
        self.last, self.count = last, self.count + n
        stride = self.timings.stride
        for seq in range(-(-first // stride) * stride, last + 1, stride):
            at = buf.find(b"id: %d\n" % seq, 0, cut)
            stamp = STAMP.search(buf, at, cut)
            if at >= 0 and stamp:
                self.timings.arrived(seq, int(stamp.group(1)), now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.timings.lost += 1
        if not self.live.done():
            self.live.set_exception(ConnectionError("stream closed before its head"))
