"""Every aiohttp internal livecomments relies on, and nowhere else: server.py and stream.py
call what is here, so an aiohttp upgrade that moves one breaks this module alone, and
tests/test_ops_aiohttp_private.py (each member below exists on the real classes) and
tests/test_ops_handover.py (the hand-off still works) say so. pyproject.toml caps aiohttp
at the newest version both passed on.

Checked: every member below exists on aiohttp 3.10.11, 3.12.15, 3.13.3 and 3.14.5
(tests/test_ops_aiohttp_private.py); the suite, hand-off included, runs on 3.14.5.

Private members (underscore names) of aiohttp's classes:
- `RequestHandler._loop`: the connection's loop, for the edge's header/body timers.
- `RequestHandler._request_count`: how many requests the parser completed; a change across
  `data_received` is how the edge sees that a request's headers arrived.
- `RequestHandler._messages`: the parsed requests not yet handled, as (message, payload)
  pairs; the last one's payload is the body the body timeout watches.
- `RequestHandler._force_close`: set before any request is read, aiohttp reads none from
  the connection (a connection refused at the connection cap).
- `RequestHandler._lingering_time`: 0 makes aiohttp close after the response instead of
  reading and discarding the rest of a body refused unread.
- `web.Server._loop`, `web.Server._kwargs`: what the AppRunner's Server was built with
  (protocol options: keepalive_timeout, access_log, ...), to build its replacement alike.
- `web.AppRunner._make_server`: the only place to put another Server (and so another
  protocol class) under an AppRunner.

Undocumented, unprefixed members relied on the same way:
- subclassing `RequestHandler` (exported by aiohttp.web, documented nowhere) and overriding
  its asyncio protocol methods `connection_made`, `data_received`, `connection_lost`, and
  `handle_error(request, status, exc, message)`; `force_close()` to end a connection now;
  `set_parser(parser, data_received_cb)`, which WebSocketResponse calls on upgrade (the edge
  stops applying the header timeout to a WebSocket's messages);
- `web.Server.__call__` (aiohttp's protocol factory), `request_handler`, `request_factory`,
  `handler_cancellation`;
- `RequestHandler.transport` set to None, then `connection_lost(None)`: the hand-off below.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

RawHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]

# What the module docstring lists, by class: the test checks each exists on aiohttp's own.
PRIVATE_MEMBERS: dict[type, tuple[str, ...]] = {
    RequestHandler: ("_loop", "_request_count", "_messages", "_force_close", "_lingering_time"),
    web.Server: ("_loop", "_kwargs"),
    web.AppRunner: ("_make_server",),
}


class Protocol(RequestHandler):
    """aiohttp's per-connection protocol, with what the edge needs of its state as methods."""

    __slots__ = ()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def requests_parsed(self) -> int:
        """Requests whose headers have arrived on this connection so far."""
        return self._request_count

    def pending_body(self) -> StreamReader | None:
        """The body of the newest parsed request, while it is still arriving."""
        payload = self._messages[-1][1] if self._messages else None
        return payload if payload is not None and not payload.is_eof() else None

    def read_nothing(self) -> None:
        """aiohttp reads no request from this connection (call from connection_made)."""
        self._force_close = True

    def close_unread(self) -> None:
        """Close after this response instead of reading and discarding the rest of the body
        for up to aiohttp's lingering time: for bodies refused unread."""
        self._lingering_time = 0.0


class ProtocolServer(web.Server):
    """The Server an AppRunner made, rebuilt with another request handler and protocol."""

    def __init__(self, base: web.Server, request_handler: RawHandler,
                 protocol: Callable[..., RequestHandler]) -> None:
        super().__init__(
            request_handler, request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation, loop=base._loop, **base._kwargs,
        )
        self._protocol = protocol

    def __call__(self) -> RequestHandler:
        return self._protocol(self, loop=self._loop, **self._kwargs)


class ServerRunner(web.AppRunner):
    """An AppRunner whose Server is replaced by `wrap_server`'s."""

    __slots__ = ()

    @abstractmethod
    def wrap_server(self, server: web.Server) -> web.Server: ...

    async def _make_server(self) -> web.Server:
        return self.wrap_server(await super()._make_server())


def let_go(request: web.Request) -> None:
    """Make aiohttp let go of a live stream's connection, which the Viewer takes next.

    Keeping the handler waiting for the stream's end would keep aiohttp's request,
    response, parser, timers and two tasks per open stream: ~10 KB each, against ~1.5 KB
    for the transport and the Viewer. aiohttp has no call to hand a connection over, so
    this is the trick: take the transport from its protocol, then tell that protocol the
    connection is lost. It drops all of its per-connection state, and with no transport
    it writes nothing more (its end-of-response write fails as a client disconnect would)
    and closes nothing. tests/test_ops_handover.py holds aiohttp to this.
    """
    protocol = request.protocol
    protocol.transport = None
    protocol.connection_lost(None)

