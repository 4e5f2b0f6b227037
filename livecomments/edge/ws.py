"""Realtime role: the WebSocket stream, `GET /v1/videos/{id}/ws` (aiohttp's WebSocket).

The same events as the SSE stream, one JSON text message each (core/wsframes.py), resumed
with `?since=SEQ` through the same seam (core/resume.py), behind the same bounds: the stream
gate's caps (edge/admission.py), the slow-viewer byte bound, ping/pong with a timeout for
half-open peers (aiohttp's `heartbeat`), a size limit on what the client sends (the POST's
body limit), and the CORS origins. Every refusal before the upgrade is the JSON error shape.

How a WebSocket viewer joins the fan-out. Its sending side is a core Viewer (`websocket=True`)
in the hub like an SSE one: the hub builds each comment's WebSocket text frame once, next to
its SSE frame (a server's frames are unmasked and never compressed here, so the bytes are the
same for every connection), and the fan-out writes those bytes to each WebSocket viewer's
transport, one write per viewer, as it does for SSE (`forms[viewer.form]`). The other way,
keeping each socket as an aiohttp WebSocketResponse and calling `send_str` per viewer, would
be a coroutine per viewer per comment (the fan-out never awaits: a task each), aiohttp's frame
header built per viewer, and flow control per viewer; that is per-viewer work the SSE path
does not do. aiohttp keeps the connection itself (its protocol reads the client: posts,
pongs, close), so a WebSocket costs its handler task, request and response for its life:
more memory than a handed-over SSE stream, none of it per comment. Writes from the hub and
from aiohttp (pongs, close) never interleave mid-frame: each is one synchronous write.

Posts over the socket, `{"type":"post","text","author","id"}`, go through the POST's own
code (edge/writer.py `accept_post`: validation, identity, rate limit, bans, slow mode,
storage) with `id` as the Idempotency-Key, scoped to the poster like the header: a retry of
the same id after a reconnect returns the first comment's seq and stores nothing. Answers:
`{"type":"ack","id","seq"}` or `{"type":"error","id","error":{...}}`. The identity is the
upgrade's `access_token` (or Authorization) or a later `{"type":"auth","token"}` message.
A realtime-only process refuses posts (`posting_not_here`) rather than forwarding them: it
has no rate limiter (limits live with the writers, shared through their store), storing from
here would put writes where the balancer does not send them, and a forward would be a second
hop with its own failure modes and a second place to keep the writer's rules; the client
posts over HTTP to a writer instead, which is where a balanced deployment sends posts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import WSMsgType, web

from livecomments.addresses import address_key
from livecomments.core import resume, wsframes
from livecomments.core.viewer import Viewer
from livecomments.edge.admission import busy_retry_ms, capped_address
from livecomments.edge.auth import AUTHENTICATOR, USER
from livecomments.edge.cors import CORS_POLICY
from livecomments.edge.errors import STORAGE_REFUSALS
from livecomments.edge.keys import CONFIG, HUB, STORAGE
from livecomments.edge.stream import STREAM_GATE, TOO_MANY_STREAMS, _set_user_timeout, pieces
from livecomments.edge.writer import accept_post, check_idempotency_key
from livecomments.errors import STORAGE_UNAVAILABLE, ApiError, retry_after
from livecomments.model import parse_seq, parse_video_id
from livecomments.storage.errors import StorageError, StorageUnavailable
from livecomments.tokens import Identity, TokenExpired, Unauthorized

log = logging.getLogger(__name__)

POSTING_NOT_HERE = "posting_not_here"
PATH = "/v1/videos/{video_id}/ws"
# The close code after an upgrade whose token has expired (4000-4999: the application's own, RFC 6455
# §7.4.2): the client fetches a fresh token and reconnects with ?since=. Like HTTP's 401.
CLOSE_TOKEN_EXPIRED = 4001


async def websocket(request: web.Request) -> web.StreamResponse:
    config, gate = request.app[CONFIG], request.app[STREAM_GATE]
    video_id = parse_video_id(request.match_info["video_id"])
    raw = request.query.get("since")
    since = None if raw is None else parse_seq(raw, "since")
    _check_origin(request)
    ws = web.WebSocketResponse(heartbeat=config.ping_interval, max_msg_size=config.body_limit, compress=False)
    try:
        user = await _upgrade_identity(request)
    except TokenExpired as e:
        return await _end_expired(request, ws, e)
    if user is not None:
        request[USER] = user
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "upgrade_required", "this is a WebSocket endpoint: send Upgrade: websocket",
                       {"Upgrade": "websocket"})
    transport = request.transport
    if transport is None:
        raise ApiError(400, "client_gone", "the client closed the connection")
    address = capped_address(request.remote)
    if address is not None:  # counted like an SSE stream: an IPv6 client as its network
        address = address_key(address, config.ipv6_prefix)
    refusal = gate.admit(address)  # counted from here: the finally below ends it in gate.leave
    if refusal is not None:
        raise ApiError(503, TOO_MANY_STREAMS, refusal, retry_after(busy_retry_ms() / 1000))
    viewer = Viewer(video_id, transport, chunked=False, websocket=True, max_buffer=config.viewer_buffer,
                    gone=gate.leave, address=address)
    try:
        return await _serve(request, ws, viewer, since)
    finally:
        gate.leave(viewer)


async def _serve(request: web.Request, ws: web.WebSocketResponse, viewer: Viewer, since: int | None) -> web.StreamResponse:
    """Join, upgrade, catch up, go live, then answer the client's messages until it closes."""
    config, hub = request.app[CONFIG], request.app[HUB]
    try:
        head = await hub.join(viewer)
    except Exception as e:  # join raises only when storage cannot give the video's head
        log.warning("cannot stream %s: reading its head failed: %s", viewer.video_id, e)
        raise ApiError(503, STORAGE_UNAVAILABLE, "comments cannot be read now", retry_after(config.retry_ms / 1000)) from None
    _set_user_timeout(viewer.transport.get_extra_info("socket"))
    # Past half the bound the catch-up waits (aiohttp's protocol pauses); the rest is room
    # for the seam's held frames and the first live ones, as on the SSE path.
    viewer.transport.set_write_buffer_limits(high=config.viewer_buffer // 2)
    writer = await ws.prepare(request)
    send = _Sender(viewer, writer.drain, config.send_timeout)
    try:
        last_sent = await resume.catch_up(send, wsframes.reset_message, request.app[STORAGE], hub, viewer, head, since)
    except StorageError as e:  # after the upgrade: say so and close; the client resumes from its last seq
        log.warning("websocket of %s ended: storage failed during its catch-up: %s", viewer.video_id, e)
        viewer.write(wsframes.error_message(STORAGE_UNAVAILABLE, "comments cannot be read now"))
        await ws.close(code=1011)
        return ws
    if viewer.dropped is not None:  # slow or shutdown while catching up: its transport is closing
        return ws
    viewer.go_live(last_sent)
    hub.counts.greet(viewer)
    async for msg in ws:  # ends at the client's close, a protocol error (too big) or a lost peer
        if msg.type is WSMsgType.TEXT:
            answer = await _answer(request, viewer.video_id, msg.data)
        elif msg.type is WSMsgType.BINARY:
            answer = wsframes.error_message("invalid_message", "send JSON text messages")
        else:
            break
        if answer:
            viewer.write(answer)  # under the same bound as the comments
    return ws


class _Sender:
    """The catch-up's writes, each bounded in memory and time as on the SSE path
    (edge/stream.py `_Sender`): pieces of about PIECE bytes, a wait for the transport to
    drain below half the bound, and a cut as slow past `timeout`."""

    def __init__(self, viewer: Viewer, drain: Callable[[], Awaitable[None]], timeout: float) -> None:
        self.viewer, self.drain, self.timeout = viewer, drain, timeout

    async def __call__(self, frames: list[bytes]) -> bool:
        """Write frames in order; False if the viewer was cut instead (now, or meanwhile by the hub)."""
        for piece in pieces(frames):
            if not await self._write(piece):
                return False
        return self.viewer.dropped is None

    async def _write(self, data: bytes) -> bool:
        viewer = self.viewer
        if viewer.dropped is not None or viewer.transport.is_closing():
            return False
        viewer.transport.write(data)
        try:
            async with asyncio.timeout(self.timeout):
                await self.drain()
        except TimeoutError:
            viewer.drop("slow")
            return False
        except ConnectionError:  # lost while waiting: the handler ends with the socket
            return False
        return True


def _check_origin(request: web.Request) -> None:
    """With cors_origins set, a browser's upgrade from another origin is refused: a WebSocket
    is not subject to CORS in the browser, so the server must check what the page's Origin is.
    A client that sends no Origin (not a browser) is let through, as CORS would."""
    policy = request.app.get(CORS_POLICY)
    origin = request.headers.get("Origin")
    if policy is not None and origin is not None and policy.allow_origin(origin.rstrip("/")) is None:
        raise ApiError(403, "origin_not_allowed", "this origin may not open a WebSocket here (cors_origins)")


async def _end_expired(request: web.Request, ws: web.WebSocketResponse, error: TokenExpired) -> web.StreamResponse:
    """An upgrade whose token has expired: accepted, told `token_expired` and closed with
    CLOSE_TOKEN_EXPIRED, so that a browser's client can read why (a refused upgrade shows it
    nothing but a failed connection). No viewer, no stream slot."""
    if not ws.can_prepare(request).ok:
        raise error  # not a WebSocket handshake: the plain 401
    await ws.prepare(request)
    try:
        await ws.send_str(orjson.dumps({"type": "error", "error": {"code": error.code, "message": error.message}}).decode())
        await ws.close(code=CLOSE_TOKEN_EXPIRED, message=b"token_expired")  # waits for the peer's close, bounded by aiohttp
    except ConnectionError:  # the client left first
        pass
    return ws


async def _upgrade_identity(request: web.Request) -> Identity | None:
    """The upgrade's token (a browser's WebSocket cannot set headers: `?access_token=`; the
    access log never prints the query). Required when streams are private (auth_streams);
    otherwise optional, and a post without one is refused where posting needs a token."""
    authenticator = request.app.get(AUTHENTICATOR)
    if authenticator is None:
        return None
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>'", invalid=True)
        return await authenticator.verify(token.strip())
    query_token = request.query.get("access_token")
    if query_token is not None:
        return await authenticator.verify(query_token)
    if request.app[CONFIG].auth_streams:
        raise Unauthorized("this stream needs a token: ?access_token=<token>", invalid=False)
    return None


async def _answer(request: web.Request, video_id: str, data: str) -> bytes:
    """The answer to one client message, or b"" (an accepted auth)."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return wsframes.error_message("invalid_json", "the message is not valid JSON")
    kind = msg.get("type") if isinstance(msg, dict) else None
    if kind == "post":
        return await _post(request, video_id, msg)
    if kind == "auth":
        return await _auth(request, msg.get("token"))
    return wsframes.error_message("invalid_message", 'a message is {"type": "post" | "auth", ...}')


async def _auth(request: web.Request, token: object) -> bytes:
    """Who posts from now on on this socket. Silent when accepted; an error when not, and the
    identity the socket had (if any) stays."""
    authenticator = request.app.get(AUTHENTICATOR)
    if authenticator is None:
        return wsframes.error_message("auth_not_configured", "this server has no token key: posting is open")
    if not isinstance(token, str) or not token:
        return wsframes.error_message("unauthorized", "an auth message needs a token")
    try:
        request[USER] = await authenticator.verify(token)
    except ApiError as e:
        return wsframes.error_message(e.code, e.message)
    return b""


async def _post(request: web.Request, video_id: str, msg: dict[str, object]) -> bytes:
    """A post over the socket, through the POST's own code (edge/writer.py `accept_post`)."""
    post_id = msg.get("id")
    try:
        if not isinstance(post_id, str):
            raise ApiError(400, "invalid_id", "a post needs an id: a string unique to the post (a UUID)")
        if not request.app[CONFIG].serves_writer:
            raise ApiError(501, POSTING_NOT_HERE, "this process only streams: POST /v1/videos/{id}/comments to a writer")
        if AUTHENTICATOR in request.app and USER not in request:
            raise Unauthorized("posting needs a token: ?access_token= on the upgrade, or an auth message", invalid=False)
        if USER in request and request[USER].expires <= time.time():  # the socket outlived its token
            raise TokenExpired()
        key = check_idempotency_key(post_id, "id")
        body = {name: msg[name] for name in ("text", "author") if name in msg}
        comment = await accept_post(request, video_id, body, key)
    except ApiError as e:
        return wsframes.error_message(e.code, e.message, post_id, of_post=True)
    except StorageError as e:
        if isinstance(e, StorageUnavailable):
            log.warning("websocket post to %s: %s", video_id, e)
        _, code, message, _ = STORAGE_REFUSALS.get(type(e), (503, STORAGE_UNAVAILABLE, "storage failed", 1))
        return wsframes.error_message(code, message, post_id, of_post=True)
    return wsframes.ack_message(post_id, comment.seq)


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, websocket, allow_head=False)
