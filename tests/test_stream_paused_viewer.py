"""A stream whose transport was already paused when the Viewer took it (aiohttp's protocol
paused it during the catch-up) is still cut once past its bound. asyncio and uvloop call
`pause_writing` only on the transition, so a Viewer set as protocol while paused never hears
it: the bound must be checked where the Viewer writes. On both loops, with real sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

import pytest
import uvloop

from livecomments.core.viewer import Viewer

FRAME = b"data: " + b"x" * 16_000 + b"\n\n"


class CatchUpProtocol(asyncio.Protocol):
    """Stands in for aiohttp's protocol, which owns the connection during the catch-up."""

    def __init__(self, accepted: asyncio.Future[asyncio.WriteTransport]) -> None:
        self.accepted = accepted
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.accepted.set_result(cast(asyncio.WriteTransport, transport))  # uvloop's are not subclasses

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False


async def _paused_viewer_is_cut() -> None:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.WriteTransport] = loop.create_future()
    before = CatchUpProtocol(accepted)
    server = await loop.create_server(lambda: before, "127.0.0.1", 0)
    peer = socket.socket()  # never reads
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.setblocking(False)
    try:
        async with asyncio.timeout(10):
            await loop.sock_connect(peer, server.sockets[0].getsockname())
            transport = await accepted
            transport.set_write_buffer_limits(high=64 * 1024)
            for _ in range(10_000):  # the kernel's buffers fill, then the transport's
                if before.paused:
                    break
                transport.write(FRAME)
            assert before.paused
            gone: asyncio.Future[Viewer] = loop.create_future()
            bound = transport.get_write_buffer_size() + 256 * 1024  # room left: 16 frames
            viewer = Viewer("v", transport, chunked=True, max_buffer=bound, gone=gone.set_result)
            viewer.go_live(0)
            assert viewer.dropped is None
            for _ in range(64):  # 1 MiB: four times the room left
                viewer.send(FRAME)
                if viewer.dropped is not None:
                    break
            assert viewer.dropped == "slow"
            assert transport.get_write_buffer_size() <= bound + len(FRAME) + 16
            assert await gone is viewer  # aborted: the connection is lost, and the hub would be told
    finally:
        if accepted.done():
            accepted.result().abort()
        peer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_viewer_paused_before_going_live_is_cut(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(_paused_viewer_is_cut())
