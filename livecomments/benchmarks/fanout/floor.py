"""The floor: a bare asyncio.Protocol HTTP server on uvloop that writes pre-built bytes.

It speaks just enough HTTP for the load generator: `GET …/stream` starts a chunked SSE
response, `POST …/comments` (JSON body with "text" and "author") builds the comment's
frame once and writes it to every stream socket, either at once (`--tick-ms 0`) or
coalesced into one write per socket per tick. Nothing here is per-viewer except the
transport itself: that is what "the machine's limit" means in the fan-out benchmark.

    python -m livecomments.benchmarks.fanout.floor --port 8081 [--tick-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from typing import cast

import orjson
import uvloop

HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
CREATED = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Floor:
    def __init__(self, tick: float) -> None:
        self.streams: set[asyncio.Transport] = set()
        self.seq = 0
        self.tick = tick
        self.pending: list[bytes] = []

    def publish(self, body: bytes) -> bytes:
        obj = orjson.loads(body)
        self.seq += 1
        comment = orjson.dumps(
            {
                "video_id": "hot",
                "seq": self.seq,
                "author": obj["author"],
                "text": obj["text"],
                "created_at": time.time(),
            }
        )
        frame = b"id: %d\nevent: comment\ndata: %s\n\n" % (self.seq, comment)
        if self.tick:
            if not self.pending:
                asyncio.get_running_loop().call_later(self.tick, self.flush)
            self.pending.append(frame)
        else:
            self.write_all(chunk(frame))
        return comment

    def flush(self) -> None:
        data, self.pending = b"".join(self.pending), []
        self.write_all(chunk(data))

    def write_all(self, data: bytes) -> None:
        for transport in self.streams:
            transport.write(data)


class Connection(asyncio.Protocol):
    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.floor.streams.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line[15:])
            end = head_end + 4 + length
            if len(self.buf) < end:
                return
            body, self.buf = self.buf[head_end + 4 : end], self.buf[end:]
            self.handle(head, body)

    def handle(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        if head.startswith(b"get ") and b"/stream" in head[: head.find(b"\r\n")]:
            self.transport.write(HEADERS + chunk(b"retry: 2000\n\n"))
            self.floor.streams.add(self.transport)
        elif head.startswith(b"post "):
            reply = self.floor.publish(body)
            self.transport.write(CREATED % (len(reply), reply))
        else:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


async def serve(port: int, tick_ms: float) -> None:
    floor = Floor(tick_ms / 1000)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(floor), "127.0.0.1", port, backlog=4096)
    print(f"floor listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tick-ms", type=float, default=0.0)
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a viewer is a descriptor: all the limit allows
    try:
        uvloop.run(serve(args.port, args.tick_ms))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
