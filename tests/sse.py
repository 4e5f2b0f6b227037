"""A small SSE reader for tests: every read is bounded by a timeout."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
import orjson

# Streams opened through open_stream(), closed by the session fixture so none leaks.
_OPEN: weakref.WeakKeyDictionary[aiohttp.ClientSession, list[aiohttp.ClientResponse]] = (
    weakref.WeakKeyDictionary()
)


def close_streams(session: aiohttp.ClientSession) -> None:
    for resp in _OPEN.pop(session, []):
        resp.close()


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> dict:
        return orjson.loads(self.data)


class SSEReader:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.opening: Event | None = None  # the first frame, once open_stream has read it

    def close(self) -> None:
        self.resp.close()

    async def next(self, timeout: float = 5.0) -> Event:
        """The next event (a retry:-only or comment-only block counts as one)."""
        ev, data, seen = Event(), [], False
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.resp.content.readline()
                if not raw:
                    raise EOFError("stream ended")
                line = raw.decode().rstrip("\n").rstrip("\r")
                if line == "":
                    if seen:
                        ev.data = "\n".join(data)
                        return ev
                    continue
                seen = True
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    ev.comments.append(value)
                elif name == "data":
                    data.append(value)
                elif name == "event":
                    ev.event = value
                elif name == "id":
                    ev.id = value
                elif name == "retry":
                    ev.retry = int(value)

    async def next_comment(self, timeout: float = 5.0) -> dict:
        """Skip heartbeats and retry frames; return the next comment's JSON."""
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.next(timeout)
                if ev.event == "comment":
                    return ev.json()

    async def comments(self, n: int, timeout: float = 10.0) -> list[dict]:
        async with asyncio.timeout(timeout):
            return [await self.next_comment(timeout) for _ in range(n)]


async def open_stream(
    session: aiohttp.ClientSession, base: str, video: str, *, last_event_id: int | None = None,
    since: int | None = None, headers: Mapping[str, str] | None = None, timeout: float = 5.0,
) -> SSEReader:
    """Open a stream and wait for its first frame (retry:), which the server writes only
    after the viewer has joined: a barrier, so comments posted after this are seen.
    A resume point goes as Last-Event-ID (`last_event_id`) or as `?since=`; `.resp` is the answer."""
    sent = dict(headers or {})
    if last_event_id is not None:
        sent["Last-Event-ID"] = str(last_event_id)
    params = {} if since is None else {"since": str(since)}
    async with asyncio.timeout(timeout):
        resp = await session.get(f"{base}/v1/videos/{video}/stream", headers=sent, params=params)
        _OPEN.setdefault(session, []).append(resp)
        assert resp.status == 200, await resp.text()
        reader = SSEReader(resp)
        reader.opening = await reader.next(timeout)
        assert reader.opening.retry is not None, reader.opening
    return reader
