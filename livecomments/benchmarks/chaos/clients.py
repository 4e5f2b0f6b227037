"""The clients of a chaos run: posters that retry with an Idempotency-Key until acknowledged,
viewers that reconnect with Last-Event-ID as a browser's EventSource does, and a stalled viewer.

Every one records what it saw; the checker compares that with storage afterwards.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

POST_TIMEOUT = 2.0  # shorter than a frozen broker's stall: a retry must not store a second comment
RETRY_PAUSE = 0.1
GIVE_UP_AFTER = 60.0  # a post retried this long is counted as given up (a fault that never heals)
RECONNECT_PAUSE = (0.2, 0.6)  # EventSource waits `retry:` (2 s); shorter keeps the run short


@dataclass(frozen=True)
class Ack:
    video: str
    seq: int
    text: str


@dataclass
class Poster:
    """Posts `{name}-{n}` to its videos in turn, each until a 201 (same key on every retry)."""

    name: str
    writer_url: str
    videos: list[str]
    pause: float
    pad: int = 0  # extra characters per comment (the flood poster's big comments)
    acked: list[Ack] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # 4xx other than 429: never expected
    gave_up: int = 0
    retries: int = 0
    sent: int = 0

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.post_next(session)
            await asyncio.sleep(self.pause)

    async def post_next(self, session: aiohttp.ClientSession) -> None:
        n = self.sent
        self.sent += 1
        await self._post_until_acked(session, self.videos[n % len(self.videos)], f"{self.name}-{n}")

    async def _post_until_acked(self, session: aiohttp.ClientSession, video: str, key: str) -> None:
        text = key + " " + "x" * self.pad if self.pad else key
        give_up_at = time.monotonic() + GIVE_UP_AFTER
        while True:
            try:
                async with asyncio.timeout(POST_TIMEOUT):
                    async with session.post(f"{self.writer_url}/v1/videos/{video}/comments",
                                            json={"text": text, "author": self.name},
                                            headers={"Idempotency-Key": key}) as resp:
                        body = await resp.read()
                if resp.status == 201:
                    self.acked.append(Ack(video, int(orjson.loads(body)["seq"]), text))
                    return
                if resp.status < 500 and resp.status != 429:
                    self.rejected.append(f"{resp.status} {body[:120]!r}")
                    return
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                pass  # the writer is down or stalled: retry with the same key
            if time.monotonic() > give_up_at:
                self.gave_up += 1
                return
            self.retries += 1
            await asyncio.sleep(RETRY_PAUSE)


@dataclass
class Viewer:
    """An EventSource: streams `video` from one realtime server, and on any end reconnects with
    Last-Event-ID (to the next server when this one refuses or is gone, as a balancer would)."""

    video: str
    urls: list[str]
    pick: int
    received: list[int] = field(default_factory=list)
    resets: int = 0
    reset_notes: list[str] = field(default_factory=list)  # "resumed at M, told to restart at N"
    connects: int = 0
    refused: int = 0
    last_id: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _resp: aiohttp.ClientResponse | None = None
    _dropped: bool = False

    def drop(self) -> None:
        """Close the connection now (a network blip): it reconnects at once with Last-Event-ID."""
        self._dropped = True
        if self._resp is not None:
            self._resp.close()

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            url = self.urls[self.pick % len(self.urls)]
            served = False
            try:
                async with session.get(f"{url}/v1/videos/{self.video}/stream",
                                       headers={"Last-Event-ID": str(self.last_id)}) as resp:
                    self._resp = resp
                    if resp.status == 200:
                        served = True
                        self.connects += 1
                        await self._read(resp, url)
                    else:
                        self.refused += 1
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                pass
            finally:
                self._resp = None
            if not served:
                self.pick += 1  # a balancer sends the retry to a server that answers
            if self._dropped:
                self._dropped = False
                continue
            await asyncio.sleep(random.uniform(*RECONNECT_PAUSE))

    async def _read(self, resp: aiohttp.ClientResponse, url: str) -> None:
        resumed_at = self.last_id
        event, event_id, data = "message", None, b""
        async for raw in resp.content:
            line = raw.rstrip(b"\r\n")
            if line:
                name, _, value = line.partition(b":")
                value = value.removeprefix(b" ")
                if name == b"event":
                    event = value.decode()
                elif name == b"id":
                    event_id = int(value)
                elif name == b"data":
                    data = value
                elif name == b"retry":
                    self.connected.set()
                continue
            if event == "comment" and event_id is not None:
                self.received.append(event_id)
            elif event == "reset":
                self.resets += 1
                self.reset_notes.append(f"resumed at {resumed_at} on {url}, reset {data.decode()}")
            if event_id is not None:  # EventSource keeps the last id of any event
                self.last_id = event_id
            event, event_id, data = "message", None, b""


class StalledViewer:
    """A viewer with a tiny receive window that reads like any other until `stall()`, then never
    reads again: the server must cut it (its slow-viewer counter says so), not buffer for it. A
    bare socket: a StreamReader would go on reading into its own buffer.

    It stalls only when told, not from its first frame: the server sets TCP_USER_TIMEOUT on
    streams, and Linux applies it to a zero window too, so a peer stalled for that long (30 s)
    is dropped by the kernel, a disconnect the slow-viewer counter rightly does not count. A
    stall through a whole fault run on a slow store would so end that way, and the run could
    not tell whether the server's own bound works."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ended_early = False  # the server ended the stream while it still read
        self._reading = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, video: str, rcvbuf: int = 4096, timeout: float = 10.0) -> StalledViewer:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: small from the start
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (host, int(port)))
                await loop.sock_sendall(sock, f"GET /v1/videos/{video}/stream HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                seen = b""
                while b"retry:" not in seen:  # written right after the server joined it: a barrier
                    data = await loop.sock_recv(sock, 1024)
                    if not data:
                        raise ConnectionError(f"stream of {video} closed before its first frame: {seen[:200]!r}")
                    seen += data
            if not seen.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(f"stream of {video} refused: {seen[:200]!r}")
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while await loop.sock_recv(self.sock, 65536):
                pass
        except OSError:
            pass
        self.ended_early = True

    async def stall(self) -> bool:
        """Stop reading, for good; False if the stream had already ended (nothing to test)."""
        self._reading.cancel()
        await asyncio.gather(self._reading, return_exceptions=True)
        return not self.ended_early

    async def ended(self, timeout: float = 10.0) -> bool:
        """Whether the server ended the stream: read what the kernel still holds for it (at most
        its send buffer) up to the end (a cut) or a reset; still streaming after `timeout`: not."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while await loop.sock_recv(self.sock, 1 << 20):
                    pass
        except TimeoutError:
            return False
        except OSError:
            pass  # reset: the server aborted it
        return True

    async def close(self) -> None:
        self._reading.cancel()
        await asyncio.gather(self._reading, return_exceptions=True)
        self.sock.close()
