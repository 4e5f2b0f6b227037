"""A light SSE client: one asyncio.Protocol per viewer, no HTTP library, no per-frame objects.

Thousands of aiohttp responses would saturate the load generator before the servers; this
sends an HTTP/1.0 GET (so the stream is not chunked), counts comment frames, checks their
order, and reads the post's send time out of the comment text to sample latency.
"""

from __future__ import annotations

import asyncio
import time

TEXT_MARK = b'"text":"t='


class ViewerProtocol(asyncio.Protocol):
    __slots__ = ("request", "ready", "closed", "buf", "frames", "last_seq", "disorder", "latencies", "sample")

    def __init__(self, request: bytes, latencies: list[float]) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.ready: asyncio.Future[None] = loop.create_future()  # the retry: frame arrived
        self.closed: asyncio.Future[None] = loop.create_future()
        self.buf = b""
        self.frames = 0
        self.last_seq = 0
        self.disorder = 0  # frames whose seq was not above the previous one (duplicates, reordering)
        self.latencies = latencies
        self.sample = False  # set for the measured window only

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]  # uvloop's is no WriteTransport subclass

    def data_received(self, data: bytes) -> None:
        parts = (self.buf + data).split(b"\n\n")
        self.buf = parts.pop()
        now = time.time()
        for frame in parts:
            if frame.startswith(b"id: "):
                self._comment(frame, now)
            elif not self.ready.done() and b"retry:" in frame:
                if frame.startswith(b"HTTP/1.1 200") or frame.startswith(b"HTTP/1.0 200"):
                    self.ready.set_result(None)
                else:
                    self.ready.set_exception(
                        RuntimeError(frame.split(b"\r\n", 1)[0].decode(errors="replace"))
                    )

    def _comment(self, frame: bytes, now: float) -> None:
        self.frames += 1
        seq = int(frame[4 : frame.index(b"\n")])
        if seq <= self.last_seq:
            self.disorder += 1
        self.last_seq = seq
        if self.sample:
            i = frame.find(TEXT_MARK)
            if i >= 0:
                start = i + len(TEXT_MARK)
                self.latencies.append(now - float(frame[start : frame.index(b'"', start)]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before the stream started"))
        if not self.closed.done():
            self.closed.set_result(None)


async def open_viewer(
    host: str, port: int, video: str, latencies: list[float]
) -> tuple[asyncio.Transport, ViewerProtocol]:
    request = f"GET /v1/videos/{video}/stream HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(lambda: ViewerProtocol(request, latencies), host, port)
    return transport, proto
