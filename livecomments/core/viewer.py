"""One stream (SSE, or a WebSocket's sending side), written straight to its transport; and
the shared frames it is sent."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Literal

from livecomments.core import frames as sse
from livecomments.core import wsframes
from livecomments.model import Comment

# (seq, SSE bytes, WebSocket frame bytes): built once, shared by every viewer and every
# resume. The HTTP chunk framing of SSE is added once per fan-out write (core/fanout.py),
# which may join several frames; a WebSocket frame is complete as built (wsframes.py).
Frame = tuple[int, bytes, bytes]

# What a viewer's connection is written: index into the forms a fan-out builds once
# (plain SSE, chunked SSE, WebSocket frames), so picking one costs no branch per viewer.
PLAIN, CHUNKED, WEBSOCKET = 0, 1, 2

NOT_LIVE = sys.maxsize  # `after` of a viewer not (or no longer) written by the fan-out's hot path


def build_frame(comment: Comment) -> Frame:
    """A deleted comment's place in the log is an empty frame: it advances seq and shows nothing."""
    if comment.deleted:
        return comment.seq, b"", b""
    if comment.deletes:
        return comment.seq, sse.delete_frame(comment), wsframes.entry_message(comment)
    return comment.seq, sse.comment_frame(comment), wsframes.entry_message(comment)


class Viewer(asyncio.Protocol):
    """One SSE connection, in two phases.

    Joining: the aiohttp handler owns the connection and writes the backlog, while the
    viewer holds the live frames that arrive meanwhile (the resume seam).

    Live (`go_live`): the viewer becomes the connection's protocol, and the handler,
    its request and its tasks are gone; an idle stream then costs a transport and this
    object. Frames go straight to the transport, except those at or below `after` (the
    last seq the backlog sent: storage may be ahead of the broker).

    The slow-viewer bound is the transport's write buffer, checked after every write
    (past `max_buffer`), and the held frames while joining (past it too): the connection
    is aborted, so memory never grows with a stalled peer, and the EventSource reconnects
    with Last-Event-ID. Not `pause_writing`: asyncio and uvloop never call it on a protocol
    set while the transport was already paused (by aiohttp's, during the catch-up), so a
    stalled peer would then grow the buffer for ever. `gone` is called once the connection
    is lost after going live. `address` is the client's, for the stream caps (None: not
    capped per address).

    A WebSocket viewer (`websocket=True`, edge/ws.py) is the sending side of a connection
    that aiohttp keeps: it is written the WebSocket form of each frame, never takes the
    connection's protocol (aiohttp's reads the client's messages, pongs and close), and its
    handler calls `gone` when the socket ends. Bound and cut are the same.
    """

    __slots__ = ("video_id", "transport", "chunked", "form", "part", "max_buffer", "address", "held",
                 "held_bytes", "after", "dropped", "_gone")

    def __init__(
        self, video_id: str, transport: asyncio.WriteTransport, *, chunked: bool, max_buffer: int,
        gone: Callable[[Viewer], None], address: str | None = None, websocket: bool = False,
    ) -> None:
        self.video_id = video_id
        self.transport = transport
        self.chunked = chunked and not websocket
        self.form = WEBSOCKET if websocket else CHUNKED if chunked else PLAIN  # which form a fan-out writes it
        self.part: Literal[1, 2] = 2 if websocket else 1  # which bytes of a Frame it is sent
        self.max_buffer = max_buffer
        self.address = address
        self.held: list[Frame] | None = []
        self.held_bytes = 0
        self.after = NOT_LIVE
        self.dropped: str | None = None  # why the server ended it: "slow" or "shutdown"
        self._gone = gone

    def offer(self, frames: list[Frame]) -> None:
        """The slow path of a fan-out: hold the frames, or write those after `after`."""
        if self.dropped is not None:
            return
        held = self.held
        if held is not None:
            held.extend(frames)
            self.held_bytes += sum(len(frame[self.part]) for frame in frames)
            if self.held_bytes > self.max_buffer:
                self.drop("slow")
            return
        part = self.part
        data = b"".join(frame[part] for frame in frames if frame[0] > self.after)
        if data:
            self.send(data)

    def send(self, data: bytes) -> None:
        """Write SSE bytes framed for this connection (one HTTP chunk, or raw on HTTP/1.0), or
        WebSocket frames as they are."""
        self.write(sse.chunk(data) if self.chunked else data)

    def write(self, data: bytes) -> None:
        """Write bytes already framed for this connection; cut it once its buffer is past the bound.
        Fanout._write inlines this for live viewers (its per-viewer hot loop): change both."""
        transport = self.transport
        if not transport.is_closing():  # lost, not yet told: connection_lost is on its way
            transport.write(data)
            if transport.get_write_buffer_size() > self.max_buffer:
                self.drop("slow")

    def go_live(self, last_sent: int) -> None:
        """End the seam: take the connection (the caller makes aiohttp let go of it first),
        then write the held frames after last_sent, and every frame directly from now on."""
        held, self.held, self.held_bytes, self.after = self.held, None, 0, last_sent
        assert held is not None, "go_live() ends the seam once"
        transport = self.transport
        if self.form != WEBSOCKET:  # a WebSocket stays aiohttp's: its protocol reads the client
            transport.set_protocol(self)
        part = self.part
        tail = b"".join(frame[part] for frame in held if frame[0] > last_sent)
        if tail:
            self.send(tail)
        elif transport.get_write_buffer_size() > self.max_buffer:  # the catch-up left it past the bound
            self.drop("slow")

    def drop(self, reason: str) -> None:
        """End the stream from the server side: "slow" aborts, "shutdown" ends it cleanly."""
        if self.dropped is not None:
            return
        self.dropped, self.after = reason, NOT_LIVE
        transport = self.transport
        if reason == "slow":
            # On the next loop turn: drop() runs inside a write, maybe inside the fan-out's loop.
            asyncio.get_running_loop().call_soon(transport.abort)
        else:
            if self.held is None and not transport.is_closing():
                if self.chunked:
                    transport.write(sse.LAST_CHUNK)
                elif self.form == WEBSOCKET:
                    transport.write(wsframes.close_frame(wsframes.GOING_AWAY))
            transport.close()

    # -- asyncio.Protocol, once live ------------------------------------------

    def data_received(self, data: bytes) -> None:
        pass  # an SSE client sends nothing after its request

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone(self)  # the hub forgets it: no fan-out reaches it again
