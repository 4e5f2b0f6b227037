"""A small WebSocket reader for tests (aiohttp's client): every read is bounded by a timeout;
and a WebSocket viewer that stalls."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from typing import Any

import aiohttp

from tests.fixtures.raw_stream import stalled_stream

UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}


class WSReader:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, opening: list[dict[str, Any]]) -> None:
        self.ws = ws
        self.opening = opening  # what came before the greeting (backlog, reset), in order
        self.greeting: dict[str, Any] | None = None
        self._put_back: list[dict[str, Any]] = []  # read while waiting for a post's answer

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        if self._put_back:
            return self._put_back.pop(0)
        async with asyncio.timeout(timeout):
            msg = await self.ws.receive()
        assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        return msg.json()

    async def next_of(self, *types: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of one of `types`, skipping the others (viewer counts)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.next(timeout)
                if msg["type"] in types:
                    return msg

    def read_backlog_again(self) -> None:
        """Let next() and comments() return the resume's backlog (`opening`) first, as an SSE
        stream's reader returns a Last-Event-ID resume's."""
        self._put_back[:0] = self.opening

    async def comments(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            return [await self.next_of("comment", timeout=timeout) for _ in range(n)]

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send_json(obj)

    async def post(self, text: str, id: str, author: str = "ana", timeout: float = 5.0) -> dict[str, Any]:
        """Post over the socket and return its answer (ack or error naming the id)."""
        await self.send({"type": "post", "text": text, "author": author, "id": id})
        others = []
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.next(timeout)
                if msg["type"] in ("ack", "error") and msg.get("id") == id:
                    self._put_back[:0] = others  # the rest is read next, in order
                    return msg
                others.append(msg)


async def open_ws(session: aiohttp.ClientSession, base: str, video: str, *, timeout: float = 5.0,
                  **params: Any) -> WSReader:
    """Connect and read up to the greeting (`viewers`), which the server sends once the socket
    is live, after any backlog: a barrier, so comments posted after this are seen live."""
    query = {k: str(v) for k, v in params.items()}
    async with asyncio.timeout(timeout):
        ws = await session.ws_connect(f"{base}/v1/videos/{video}/ws", params=query)
        opening = []
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
            body = msg.json()
            if body["type"] == "viewers":
                reader = WSReader(ws, opening)
                reader.greeting = body
                return reader
            opening.append(body)


async def stalled_ws(base: str, video: str) -> socket.socket:
    """Complete the upgrade over a bare socket with a small receive buffer, read up to the
    greeting (sent once live), then never read again: a client that stopped reading."""
    key = base64.b64encode(os.urandom(16)).decode()
    return await stalled_stream(base, f"/v1/videos/{video}/ws", headers={**UPGRADE, "Sec-WebSocket-Key": key},
                                until=b'"type":"viewers"', status=b"101")
