"""The connection level of a public port: what one client may hold before a handler runs.

aiohttp bounds what a request may hold once it runs (client_max_size) and how long an
idle keep-alive connection stays (keepalive_timeout), but nothing between accept and a
parsed request, and nothing while a body trickles in. `EdgeRunner` is an AppRunner whose
protocol (`EdgeRequestHandler`, a RequestHandler subclass: aiohttp has no hook for this;
every aiohttp internal it touches is in aiohttp_private.py) adds, per connection:

- a cap on connections per process and per client address (an IPv6 client counted as its
  network of `ipv6_prefix` bits, as rate limits and the stream cap count it), counted while
  aiohttp holds them: a live stream leaves the count once stream.py hands it to its Viewer
  (the per-stream caps are admission.py's). The per-process cap is fitted at start, with the
  stream cap, to the open files limit (admission.fitted_caps: the descriptors left once
  storage, the broker and the listeners have theirs), so accept() does not fail first.
  At the cap a new connection takes the place of the connection idle longest (kept alive
  between requests, or connected and silent), which is closed, as nginx reuses its idle
  keep-alive connections: idle connections cannot keep health checks and posts out.
  Only when every connection is busy, or past the per-address cap, does the new one get a
  fixed 503, closed before anything is read (and at once, not after REFUSED_LINGER, past
  FdCaps.refusing of them), so health checks and posts keep room while one address
  floods. Loopback peers are not capped per address, as in admission.py: there sit the
  local proxy, through which every client arrives, and load generators;
- a header timeout: from connect, or from the first byte of the next request on a
  kept-alive connection, to the end of its headers; then closed;
- a body timeout: from the end of the headers to the end of the body; then closed;
- a refusal of any declared Content-Length over the limit (413) before the body is read,
  and so before `Expect: 100-continue` is answered;
- aiohttp's own parser errors (URL or header too long, control characters, unknown
  method) answered in the JSON error shape, without echoing the request, and logged at
  debug level in one line, not with a traceback each.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, BadStatusLine, InvalidHeader, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_request import BaseRequest

from livecomments.addresses import DEFAULT_IPV6_PREFIX
from livecomments.config import Config
from livecomments.edge.admission import AddressCounts, cap_key, fitted_caps
from livecomments.edge.aiohttp_private import Protocol, ProtocolServer, RawHandler, ServerRunner
from livecomments.edge.errors import error_response
from livecomments.strategies.signing import PATH, push_body_limit

log = logging.getLogger(__name__)

_OVER_CAP_BODY = b'{"error":{"code":"too_many_connections","message":"too many connections: retry later"}}'
OVER_CAP_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(_OVER_CAP_BODY), _OVER_CAP_BODY)
)
REFUSED_LINGER = 1.0  # seconds a refused connection stays open, reading nothing
# What a malformed request is told: fixed texts, never the request's own bytes.
_PARSER_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (LineTooLong, "request line or header too long"),
    (BadHttpMethod, "unknown method"),
    (BadStatusLine, "malformed request line"),
    (InvalidHeader, "malformed header"),
)


@dataclass
class Edge:
    """The limits of one listener, and its connections by client address."""

    header_timeout: float
    body_timeout: float
    body_limit: int  # declared bodies over this get 413 unread
    push_limit: int  # ... except the deliver endpoint's, which has its own limit
    max_connections: int  # 0 = no cap
    max_per_address: int  # 0 = no cap
    max_refusing: int = 64  # refused connections lingering at once; past it they are closed at once
    ipv6_prefix: int = DEFAULT_IPV6_PREFIX  # an IPv6 client is counted per network of this many bits
    counts: AddressCounts = field(init=False)
    refusing: int = field(init=False, default=0)
    # Counted connections with no request under way, the one idle longest first.
    idle: dict[EdgeRequestHandler, None] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = AddressCounts(self.max_connections, self.max_per_address)

    @classmethod
    def from_config(cls, config: Config) -> Edge:
        caps = fitted_caps(config)  # max_connections as it fits the open files limit
        return cls(
            header_timeout=config.header_timeout, body_timeout=config.body_timeout,
            body_limit=config.body_limit, push_limit=push_body_limit(config.max_text, config.max_author),
            max_connections=caps.connections, max_per_address=config.max_connections_per_address,
            max_refusing=caps.refusing, ipv6_prefix=config.ipv6_prefix,
        )

    def admit(self, address: str | None) -> bool:
        """Count a connection from address (None: not capped per address), or refuse it.
        At the per-process cap, the connection idle longest is closed to make room."""
        refused = self.counts.admit(address)
        if refused == "total" and self.idle:
            oldest = next(iter(self.idle))
            log.debug("closed an idle connection from %s for a new one: connection cap reached", oldest.address)
            oldest.reclaim()
            refused = self.counts.admit(address)
        return refused is None

    def release(self, address: str | None) -> None:
        self.counts.release(address)


class EdgeRequestHandler(Protocol):
    """aiohttp's protocol with the caps and timeouts of the module docstring."""

    __slots__ = ("_edge", "_counted", "address", "_deadline", "_body", "_in_flight", "_upgraded", "local_address")

    def __init__(self, manager: web.Server, edge: Edge, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._edge = edge
        self._counted = False  # while counted in the edge
        self.address: str | None = None  # the key it counts against (cap_key), None for loopback
        self._deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # a body arriving under the body timeout
        self._in_flight = 0  # requests whose headers arrived and whose handler has not returned
        self._upgraded = False  # a WebSocket now: its bytes are messages, never a next request
        self.local_address = ""  # "host:port" it came in on, for X-Served-By (edge/access.py): read once

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = cap_key(str(peer[0]), self._edge.ipv6_prefix) if isinstance(peer, tuple) else None
        if not self._edge.admit(address):
            log.debug("refused a connection from %s: connection cap reached", address)
            self._refuse(cast(asyncio.Transport, transport))
            return
        self._counted, self.address = True, address
        self._edge.idle[self] = None  # connected and silent: reclaimable until its first byte
        self._arm(self._edge.header_timeout)

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Answer 503 unread, and close a moment later: closing at once would make the request
        the client is sending meet a closed socket, whose reset can discard the 503 unread.
        Past `max_refusing` lingering, closed at once: a flood must not hold descriptors."""
        self.read_nothing()
        transport.write(OVER_CAP_RESPONSE)
        if transport.can_write_eof():
            transport.write_eof()
        edge = self._edge
        edge.refusing += 1

        def close() -> None:
            edge.refusing -= 1
            transport.close()

        self.loop.call_later(REFUSED_LINGER if edge.refusing <= edge.max_refusing else 0.0, close)

    def data_received(self, data: bytes) -> None:
        requests = self.requests_parsed()
        super().data_received(data)
        if self._counted and data:
            self._edge.idle.pop(self, None)  # a request is under way: not reclaimable until it is handled
        if self.requests_parsed() != requests:  # headers of a request completed
            self._in_flight += self.requests_parsed() - requests
            self._disarm()
            body = self.pending_body()
            if body is not None:
                self._body = body
                self._arm(self._edge.body_timeout)
        elif self._body is not None:
            if self._body.is_eof():
                self._disarm()
                self._idle_if_done()  # the rest of a body its handler left unread
        elif self._deadline is None and data and self._counted and not self._upgraded:
            self._arm(self._edge.header_timeout)  # the first bytes of the next request

    def set_parser(self, parser: Any, data_received_cb: Callable[[], None] | None = None) -> None:
        """aiohttp hands the connection a WebSocket frame parser on upgrade: from now on its bytes
        (messages, pongs) are not a next request's headers, so no header timeout may cut it. Its
        liveness is the WebSocket's own ping/pong (edge/ws.py, heartbeat=). It leaves the
        connection count as a live SSE stream does: the stream caps (edge/admission.py) count it now,
        and counting it twice would refuse viewers at max_connections, long before max_streams."""
        self._upgraded = True
        self._disarm()
        self._uncount()
        super().set_parser(parser, data_received_cb)

    def request_done(self) -> None:
        """A request's handler returned: with nothing else under way, the connection is idle."""
        self._in_flight -= 1
        self._idle_if_done()

    def _idle_if_done(self) -> None:
        if self._counted and not self._in_flight and self._deadline is None:
            self._edge.idle[self] = None

    def reclaim(self) -> None:
        """Close this idle connection now, for a new one to take its place in the count."""
        self._uncount()
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        # Also called by aiohttp_private.let_go when a live stream leaves aiohttp for its Viewer.
        self._disarm()
        self._uncount()
        super().connection_lost(exc)

    def _uncount(self) -> None:
        if self._counted:
            self._edge.idle.pop(self, None)
            self._edge.release(self.address)
            self._counted = False

    def _arm(self, timeout: float) -> None:
        self._disarm_timer()
        self._deadline = self.loop.call_later(timeout, self._expire)

    def _disarm(self) -> None:
        self._disarm_timer()
        self._body = None

    def _disarm_timer(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        what = "body" if self._body is not None else "headers"
        log.debug("closed a connection from %s: its %s did not arrive in time", self.address, what)
        self._body = None
        self.force_close()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:  # a handler failed outside the error middleware: a bug, worth a traceback
            log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
            if request.writer.output_size > 0:
                raise ConnectionError("response already started")
            resp = error_response(status, "internal", "internal server error")
        else:
            text = next((text for kind, text in _PARSER_ERRORS if isinstance(exc, kind)), "malformed request")
            log.debug("refused a malformed request from %s: %s", request.remote, type(exc).__name__)
            resp = error_response(status, "bad_request", text)
        resp.force_close()
        return resp


def edge_server(base: web.Server, edge: Edge) -> web.Server:
    """aiohttp's Server making EdgeRequestHandlers, with declared bodies checked first."""

    def protocol(manager: web.Server, **kwargs: Any) -> EdgeRequestHandler:
        return EdgeRequestHandler(manager, edge, **kwargs)

    return ProtocolServer(base, _refuse_declared_overflow(base.request_handler, edge), protocol)


def _refuse_declared_overflow(handler: RawHandler, edge: Edge) -> RawHandler:
    """Runs before routing, so before aiohttp answers `Expect: 100-continue`; and tells the
    connection when the request is handled (when it may become idle)."""

    smallest = min(edge.push_limit, edge.body_limit)

    async def guarded(request: BaseRequest) -> web.StreamResponse:
        try:
            length = request.content_length  # parsed at each access: once here
            if length is not None and length > smallest:
                limit = edge.push_limit if request.path == PATH else edge.body_limit
                if length > limit:
                    close_unread(request)
                    return error_response(413, "body_too_large", f"body is over {limit} bytes")
            return await handler(request)
        finally:
            if isinstance(request.protocol, EdgeRequestHandler):
                request.protocol.request_done()

    return guarded


def close_unread(request: BaseRequest) -> None:
    """The request's body will not be read: end the connection after the response."""
    if isinstance(request.protocol, EdgeRequestHandler):
        request.protocol.close_unread()


class EdgeRunner(ServerRunner):
    """An AppRunner whose connections go through EdgeRequestHandler."""

    __slots__ = ("_edge",)

    def __init__(self, app: web.Application, edge: Edge, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._edge = edge

    def wrap_server(self, server: web.Server) -> web.Server:
        return edge_server(server, self._edge)


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one: every viewer holds a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:  # some platforms cap it below the hard limit
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, e)
            return soft
        soft = hard
    return soft
