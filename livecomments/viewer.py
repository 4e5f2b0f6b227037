"""One SSE connection, written straight to its transport; and the shared frames it is sent."""

from __future__ import annotations

import asyncio

from livecomments import sse
from livecomments.model import Comment

# (seq, SSE bytes): built once, shared by every viewer and every resume. The HTTP chunk
# framing is added once per fan-out write (hub._fanout), which may join several frames.
Frame = tuple[int, bytes]


def build_frame(comment: Comment) -> Frame:
    return comment.seq, sse.comment_frame(comment)


class Viewer:
    """One SSE connection. Until `go_live()` it holds live frames (the resume seam);
    after it, frames go straight to the transport, except those at or below `after`
    (the last seq its backlog read sent: storage may be ahead of the broker).

    The slow-viewer bound is the transport's own write buffer: past `max_buffer`
    bytes the connection is aborted and counted, so memory never grows with a
    stalled peer, and the EventSource reconnects with Last-Event-ID.
    """

    __slots__ = ("video_id", "transport", "chunked", "max_buffer", "held", "held_bytes", "after", "closed")

    def __init__(
        self, video_id: str, transport: asyncio.WriteTransport, *, chunked: bool, max_buffer: int
    ) -> None:
        self.video_id = video_id
        self.transport = transport
        self.chunked = chunked
        self.max_buffer = max_buffer
        self.held: list[Frame] | None = []
        self.held_bytes = 0
        self.after = -1  # set by go_live()
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def offer(self, frames: list[Frame]) -> bool:
        """The slow path of a fan-out: hold the frames, or write those after `after`.
        False means the viewer is too slow and must go."""
        held = self.held
        if held is not None:
            held.extend(frames)
            self.held_bytes += sum(len(frame[1]) for frame in frames)
            return self.held_bytes <= self.max_buffer
        data = b"".join(frame[1] for frame in frames if frame[0] > self.after)
        return self.send(data) if data else True

    def send(self, data: bytes) -> bool:
        """Write SSE bytes framed for this connection (one HTTP chunk, or raw on HTTP/1.0)."""
        return self.write(sse.chunk(data) if self.chunked else data)

    def write(self, data: bytes) -> bool:
        """Write bytes already framed for this connection; False: past the slow-viewer bound."""
        transport = self.transport
        if transport.is_closing():
            return True  # the handler is being cancelled; it leaves the hub itself
        transport.write(data)
        return transport.get_write_buffer_size() <= self.max_buffer

    def go_live(self, last_sent: int) -> list[bytes]:
        """End the seam: return the held frames after last_sent, and write directly from now on."""
        held, self.held, self.held_bytes, self.after = self.held or [], None, 0, last_sent
        return [frame[1] for frame in held if frame[0] > last_sent]

    def close(self, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
