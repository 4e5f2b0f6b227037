"""Lazy viewers: thousands of SSE streams of one video that no event loop watches, read in sweeps.

An eager client pays a wake-up and a read per viewer per write the server makes, so with a hot video
it costs as much as the server and times its own reading. A lazy viewer is a plain non-blocking
socket with a large receive buffer: every `--interval` seconds one sweep does one large recv per
viewer, whatever the comment rate, and counts `event: comment` in what came. The kernel holds what
arrives between sweeps, and nothing registers for wake-ups, so the server's send path does not wake
this process either. Each viewer's count is kept, so the driver checks that every viewer got every
comment (none lost, none twice).

Driven by hotvideo_load.py over stdin and stdout, one command and one JSON answer per line:

    connect N  ->  {"connected": total, "served_by": {id: n}}   N more viewers, each past its response head
    count E [H] -> {"frames": F, "behind": B, "ahead": A, "missing": M, "closed": C}  after a sweep: B viewers
                   have fewer than E comments (M fewer in all), A more than H (default E; posts still in
                   flight may or may not have been stored)
    (end of input: close every viewer and exit)

    python -m livecomments.benchmarks.hotvideo_lazy --port P [--interval 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import re
import resource
import select
import selectors
import socket
import sys
import time
from collections import Counter
from subprocess import PIPE
from typing import Any

PATTERN = b"event: comment"
TAIL = len(PATTERN) - 1
RCVBUF = 1 << 20  # the kernel doubles it: 2 MiB queued per viewer before the server's side fills
READ = 256 * 1024  # one recv per viewer per sweep takes this much at most (more: read again)
IN_FLIGHT = 64  # connections being opened at once (the server caps connections in their catch-up)
CONNECT_TIMEOUT = 120.0
REQUEST = b"GET /v1/videos/hot/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # <linux/in.h>: a port only at connect
SERVED_BY = re.compile(rb"\r\nx-served-by: *([^\r]*)\r\n", re.I)


class Lazy:
    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.port, self.source = port, source
        self.socks: list[socket.socket] = []
        self.counts: list[int] = []  # comments each viewer got
        self.tails: list[bytes] = []  # each viewer's last bytes: a pattern may straddle two reads
        self.open: list[bool] = []
        self.served_by: Counter[str] = Counter()
        self.buf = bytearray(READ)

    def connect(self, n: int) -> None:
        """n more viewers, each connected, asked for the stream and past its response head."""
        sel = selectors.DefaultSelector()
        heads: dict[socket.socket, bytes] = {}
        todo, deadline = n, time.monotonic() + CONNECT_TIMEOUT
        try:
            while todo or heads:
                while todo and len(heads) < IN_FLIGHT:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)  # before connect: window scale
                    # Its own source address: one address has ~28,000 ports to reach one server port with.
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((self.source, 0))
                    sock.setblocking(False)
                    if (err := sock.connect_ex(("127.0.0.1", self.port))) not in (0, errno.EINPROGRESS):
                        raise OSError(err, f"connect: {os.strerror(err)}")
                    sel.register(sock, selectors.EVENT_WRITE)
                    heads[sock], todo = b"", todo - 1
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(heads) + todo} viewers not connected after {CONNECT_TIMEOUT:g} s")
                for key, events in sel.select(1.0):
                    sock = key.fileobj  # type: ignore[assignment]
                    if events & selectors.EVENT_WRITE:
                        if err := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            raise OSError(err, f"connect: {os.strerror(err)}")
                        sock.send(REQUEST)  # a few dozen bytes into an empty buffer: sent whole
                        sel.modify(sock, selectors.EVENT_READ)
                        continue
                    data = sock.recv(READ)
                    if not data:
                        raise ConnectionError("the server closed a stream before its response head")
                    head = heads[sock] + data
                    end = head.find(b"\r\n\r\n")
                    if end < 0:
                        heads[sock] = head
                        continue
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise ConnectionError(f"stream refused: {head[:end].splitlines()[0].decode(errors='replace')}")
                    sel.unregister(sock)
                    del heads[sock]
                    match = SERVED_BY.search(head, 0, end + 2)
                    self.served_by[match.group(1).decode(errors="replace").strip() if match else "?"] += 1
                    self.socks.append(sock)
                    self.counts.append(head.count(PATTERN))
                    self.tails.append(head[-TAIL:])
                    self.open.append(True)
        finally:
            sel.close()

    def sweep(self) -> None:
        """One recv per viewer (more only while a read fills the buffer), counting comment frames."""
        buf, view = self.buf, memoryview(self.buf)
        counts, tails, opened = self.counts, self.tails, self.open
        for i, sock in enumerate(self.socks):
            while True:
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    break
                except OSError:
                    n = 0
                if n == 0:
                    opened[i] = False
                    break
                straddling = (tails[i] + bytes(view[: min(n, TAIL)])).count(PATTERN)  # neither part holds one whole
                counts[i] += buf.count(PATTERN, 0, n) + straddling
                tails[i] = bytes(view[max(0, n - TAIL) : n]) if n >= TAIL else (tails[i] + bytes(view[:n]))[-TAIL:]
                if n < READ:
                    break

    def count(self, expected: int, most: int) -> dict[str, int]:
        self.sweep()
        live = [c for c, is_open in zip(self.counts, self.open, strict=True) if is_open]
        return {
            "frames": sum(self.counts),
            "behind": sum(1 for c in live if c < expected),
            "ahead": sum(1 for c in live if c > most),
            "missing": sum(expected - c for c in live if c < expected),
            "closed": len(self.open) - len(live),
        }

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


class LazyProcess:
    """The driver's side: one helper process, asked one command at a time (from an asyncio loop)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.reply: dict[str, Any] = {"connected": 0}  # its answers so far, the latest of each field

    @classmethod
    async def start(cls, port: int, source: str) -> LazyProcess:
        argv = [sys.executable, "-m", "livecomments.benchmarks.hotvideo_lazy", "--port", str(port), "--source", source]
        return cls(await asyncio.create_subprocess_exec(*argv, stdin=PIPE, stdout=PIPE))

    async def ask(self, command: str, timeout: float = CONNECT_TIMEOUT + 30) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"lazy viewers exited {await self.proc.wait()} on `{command}`")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"lazy viewers: {reply['error']}")
        self.reply.update(reply)
        return reply

    async def stop(self) -> None:
        """End of input: it closes its viewers and exits."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        async with asyncio.timeout(30):
            await self.proc.wait()


def answer(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def serve(lazy: Lazy, interval: float) -> None:
    """Sweep every `interval` seconds; answer commands in between."""
    stdin = sys.stdin.buffer
    next_sweep = time.monotonic() + interval
    while True:
        readable, _, _ = select.select([stdin], [], [], max(0.0, next_sweep - time.monotonic()))
        if readable:
            line = stdin.readline().split()
            if not line:
                return
            if line[0] == b"connect":
                lazy.connect(int(line[1]))
                answer(connected=len(lazy.socks), served_by=dict(lazy.served_by))
            elif line[0] == b"count":
                answer(**lazy.count(int(line[1]), int(line[-1])))
        if time.monotonic() >= next_sweep:
            lazy.sweep()
            next_sweep = max(next_sweep + interval, time.monotonic())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between sweeps")
    parser.add_argument("--source", default="127.0.0.1", help="the loopback address its viewers connect from")
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # every viewer is a descriptor
    lazy = Lazy(args.port, args.source)
    try:
        serve(lazy, args.interval)
    except Exception as e:  # one line for the driver, not a traceback
        answer(error=f"{type(e).__name__}: {e}")
        sys.exit(1)
    finally:
        lazy.close()


if __name__ == "__main__":
    main()
