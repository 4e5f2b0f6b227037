"""Realtime role: the SSE stream (validate -> admit -> join -> backlog -> live)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator

from aiohttp import web
from aiohttp.http import HttpVersion11

from livecomments.addresses import address_key
from livecomments.core import frames as sse
from livecomments.core.resume import catch_up
from livecomments.core.viewer import Viewer
from livecomments.edge.admission import StreamGate, busy_retry_ms, capped_address, fitted_caps
from livecomments.edge.aiohttp_private import let_go
from livecomments.edge.errors import error_response
from livecomments.edge.keys import CONFIG, HUB, STORAGE
from livecomments.errors import STORAGE_UNAVAILABLE, ApiError
from livecomments.model import parse_seq, parse_video_id
from livecomments.storage.errors import StorageError

log = logging.getLogger(__name__)

STREAM_GATE = web.AppKey("stream_gate", StreamGate)
STREAM_PATH = "/v1/videos/{video_id}/stream"
TOO_MANY_STREAMS = "too_many_streams"
PIECE = 64 * 1024  # bytes per catch-up write: a stalled peer is noticed after at most this much more

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
    config, hub, gate = request.app[CONFIG], request.app[HUB], request.app[STREAM_GATE]
    video_id = parse_video_id(request.match_info["video_id"])
    since = _resume_point(request)
    transport = request.transport
    if transport is None:
        raise ApiError(400, "client_gone", "the client closed the connection")
    _set_user_timeout(transport.get_extra_info("socket"))
    address = capped_address(request.remote)
    if address is not None:  # counted like rate limits: an IPv6 client as its network (addresses.py)
        address = address_key(address, config.ipv6_prefix)
    refusal = gate.admit(address)  # counted from here: every path below ends in gate.leave
    if refusal is not None:
        return _turn_away(request, TOO_MANY_STREAMS, refusal, busy_retry_ms())
    chunked = request.version >= HttpVersion11
    viewer = Viewer(video_id, transport, chunked=chunked, max_buffer=config.viewer_buffer, gone=gate.leave,
                    address=address)
    try:
        head = await hub.join(viewer)
    except Exception as e:  # join raises only when storage cannot give the video's head
        gate.leave(viewer)
        log.warning("cannot stream %s: reading its head failed: %s", video_id, e)
        return _turn_away(request, STORAGE_UNAVAILABLE, "comments cannot be read now", config.retry_ms)
    except BaseException:
        gate.leave(viewer)
        raise
    resp = web.StreamResponse(headers=SSE_HEADERS)
    try:
        last_sent = await _open(request, resp, viewer, head, since)
    except StorageError as e:  # after the headers: end the stream, and the EventSource resumes from its last id
        gate.leave(viewer)
        log.warning("stream of %s ended: storage failed during its catch-up: %s", video_id, e)
        return resp
    except BaseException:
        gate.leave(viewer)
        raise
    if viewer.dropped is not None:  # slow or shutdown while catching up: its transport is closing
        gate.leave(viewer)
        return resp
    let_go(request)  # aiohttp forgets the connection: the Viewer takes it
    viewer.go_live(last_sent)
    hub.counts.greet(viewer)
    return resp


async def _open(request: web.Request, resp: web.StreamResponse, viewer: Viewer, head: int, since: int | None) -> int:
    """Start the response and send the backlog; returns the last seq sent."""
    config = request.app[CONFIG]
    if viewer.chunked:
        resp.enable_chunked_encoding()
    # aiohttp's protocol pauses (so resp.write waits) past half the viewer's bound: the
    # other half is room for the seam's held frames and the first live ones.
    viewer.transport.set_write_buffer_limits(high=config.viewer_buffer // 2)
    await resp.prepare(request)
    send = _Sender(resp, viewer, config.send_timeout)
    if not await send([sse.retry_frame(config.retry_ms)]):
        return head
    return await catch_up(send, sse.reset_frame, request.app[STORAGE], request.app[HUB], viewer, head, since)


async def stream_head(request: web.Request) -> web.StreamResponse:
    """The stream's headers and nothing else: no body, no viewer, no watch."""
    parse_video_id(request.match_info["video_id"])
    _resume_point(request)
    return web.StreamResponse(headers=SSE_HEADERS)


def expired_stream(error: ApiError) -> web.Response:
    """A stream opened with an expired token (edge/auth.py): 200, one `event: error` naming
    `token_expired`, and the end. A 401 would stop an EventSource for good; this way its client
    reads why, fetches a fresh token and resumes with Last-Event-ID. (A plain EventSource that
    does not would reconnect every few seconds and be told the same, at the cost of one small
    reply.) A stream already open when its token expires is kept: the token is checked when a
    stream opens, as a cookie is (docs/identity.md)."""
    return web.Response(body=sse.error_frame(error.code, error.message), headers=SSE_HEADERS)


def _turn_away(request: web.Request, code: str, message: str, retry_ms: int) -> web.Response:
    """A stream that cannot be served now, answered so that its client comes back later
    (see livecomments/edge/admission.py): an EventSource retries only a 200."""
    headers = {"Retry-After": str(-(-retry_ms // 1000))}
    if "text/event-stream" in request.headers.get("Accept", ""):
        body = sse.retry_frame(retry_ms) + sse.error_frame(code, message)
        return web.Response(body=body, headers={**SSE_HEADERS, **headers})
    resp = error_response(503, code, message)
    resp.headers.update(headers)
    return resp


class _Sender:
    """The handler's writes before the stream goes live, each bounded in memory and time.

    Frames go out in pieces of about PIECE bytes; aiohttp's resp.write waits while the
    transport holds more than half the viewer's bound (its protocol is paused past it),
    and a wait longer than `timeout` cuts the viewer as slow. A stalled peer so costs at
    most about `viewer_buffer`, and its handler ends within `timeout`, whatever the backlog.
    """

    def __init__(self, resp: web.StreamResponse, viewer: Viewer, timeout: float) -> None:
        self.resp, self.viewer, self.timeout = resp, viewer, timeout

    async def __call__(self, frames: list[bytes]) -> bool:
        """Write frames in order; False if the viewer was cut instead (now, or meanwhile by the hub)."""
        if self.viewer.dropped is not None:
            return False
        for piece in pieces(frames):
            try:
                async with asyncio.timeout(self.timeout):
                    await self.resp.write(piece)
            except TimeoutError:
                self.viewer.drop("slow")
                return False
        return True


def pieces(frames: list[bytes]) -> Iterator[bytes]:
    """The frames, in order, joined into writes of about PIECE bytes (the SSE and WebSocket catch-ups)."""
    piece: list[bytes] = []
    size = 0
    for frame in frames:
        piece.append(frame)
        size += len(frame)
        if size >= PIECE:
            yield b"".join(piece)
            piece, size = [], 0
    if piece:
        yield b"".join(piece)


def _set_user_timeout(sock: socket.socket | None) -> None:
    if sock is not None and hasattr(socket, "TCP_USER_TIMEOUT") and sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)


async def stream_gate_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the hub's context: the gate takes admitted viewers out of the hub as they leave."""
    config = app[CONFIG]
    app[STREAM_GATE] = StreamGate(app[HUB].leave, max_streams=fitted_caps(config).streams,
                                  max_per_address=config.max_streams_per_address)
    yield


def add_routes(app: web.Application) -> None:
    app.router.add_get(STREAM_PATH, stream, allow_head=False)
    app.router.add_route("HEAD", STREAM_PATH, stream_head)
