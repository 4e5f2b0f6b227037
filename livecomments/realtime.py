"""Realtime role: the SSE stream (validate -> join -> backlog -> live)."""

from __future__ import annotations

import socket

from aiohttp import web
from aiohttp.http import HttpVersion11

from livecomments import sse
from livecomments.app_keys import CONFIG, HUB
from livecomments.errors import ApiError
from livecomments.hub import Hub
from livecomments.model import parse_seq, parse_video_id
from livecomments.viewer import Viewer

# A peer that vanished without a FIN (Wi-Fi off) is dropped once unacknowledged data is this old.
TCP_USER_TIMEOUT_MS = 30_000
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer this response
}


def _resume_point(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is not None:
        return parse_seq(raw.strip(), "Last-Event-ID")
    raw = request.query.get("since")
    return None if raw is None else parse_seq(raw, "since")


async def stream(request: web.Request) -> web.StreamResponse:
    config, hub = request.app[CONFIG], request.app[HUB]
    video_id = parse_video_id(request.match_info["video_id"])
    since = _resume_point(request)
    transport = request.transport
    if transport is None:
        raise ApiError(400, "client_gone", "the client closed the connection")
    _set_user_timeout(transport.get_extra_info("socket"))
    chunked = request.version >= HttpVersion11
    viewer = Viewer(video_id, transport, chunked=chunked, max_buffer=config.viewer_buffer, gone=hub.leave)
    try:
        head = await hub.join(viewer)
    except Exception as e:
        raise ApiError(503, "unavailable", f"cannot stream {video_id} now: {e}") from None
    try:
        resp = web.StreamResponse(headers=SSE_HEADERS)
        if chunked:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(sse.retry_frame(config.retry_ms))
        last_sent = await _catch_up(resp, hub, viewer, head, since)
    except BaseException:
        hub.leave(viewer)
        raise
    if viewer.dropped is not None:  # slow or shutdown while catching up: its transport is closing
        hub.leave(viewer)
        return resp
    _release(request)
    viewer.go_live(last_sent)
    return resp


def _release(request: web.Request) -> None:
    """Make aiohttp let go of a live stream's connection, which the Viewer takes next.

    Keeping the handler waiting for the stream's end would keep aiohttp's request,
    response, parser, timers and two tasks per open stream: ~10 KB each, against ~1.5 KB
    for the transport and the Viewer. aiohttp has no call to hand a connection over, so
    this is the trick: take the transport from its protocol, then tell that protocol the
    connection is lost. It drops all of its per-connection state, and with no transport
    it writes nothing more (its end-of-response write fails as a client disconnect would)
    and closes nothing. tests/test_stream.py holds aiohttp to this.
    """
    protocol = request.protocol
    protocol.transport = None
    protocol.connection_lost(None)


async def _catch_up(resp: web.StreamResponse, hub: Hub, viewer: Viewer, head: int, since: int | None) -> int:
    """Send stored comments after `since`; returns the last seq sent. Live frames held
    meanwhile by the viewer start at head+1, so the two overlap and never leave a gap."""
    if since is None:
        return head
    if since > head:  # an id this video never reached (storage was replaced): start from now
        await resp.write(sse.reset_frame(head + 1))
        return head
    last = since
    while True:
        frames = await hub.read_since(viewer.video_id, last)
        if last == since and frames and frames[0][0] > since + 1:
            await resp.write(sse.reset_frame(frames[0][0]))  # older comments are gone
        if frames:
            await resp.write(b"".join(frame[1] for frame in frames))
            last = frames[-1][0]
        held = viewer.held
        if len(frames) < hub.backlog_limit or (held and held[0][0] <= last + 1):
            return last


def _set_user_timeout(sock: socket.socket | None) -> None:
    if sock is not None and hasattr(socket, "TCP_USER_TIMEOUT") and sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/videos/{video_id}/stream", stream)
