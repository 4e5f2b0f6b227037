"""The public app's one middleware: identity and the error shape around each handler, and the
request metrics and access log of every answer.

It sees every answer as the client gets it, refusals of identity included. A stream's line
and count come when its handler returns, which is when the stream goes live (realtime.py
hands the connection to its Viewer then), not when it ends: the duration is the time to go
live, and livecomments_connections counts the open ones.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from livecomments.edge.auth import identify
from livecomments.edge.errors import ERROR_CODE, Handler, error_answer
from livecomments.edge.keys import CONFIG, METRICS, SERVER_ID
from livecomments.edge.server import EdgeRequestHandler
from livecomments.errors import CLIENT_GONE
from livecomments.logs import ACCESS_LOGGER
from livecomments.metrics import METHODS, REJECTION_CODES, Metrics

access_log = logging.getLogger(ACCESS_LOGGER)
POST_ROUTE = "/v1/videos/{video_id}/comments"


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _rejection_code(response: web.StreamResponse) -> str:
    code = response.get(ERROR_CODE)
    return code if code in REJECTION_CODES else "other"


def _observe(request: web.Request, status: int, started: float, metrics: Metrics,
             response: web.StreamResponse | None = None) -> None:
    elapsed = time.perf_counter() - started
    route, method = _route(request), request.method
    metrics.http_requests.inc(route, method if method in METHODS else "other", str(status))
    if route == POST_ROUTE and method == "POST":
        metrics.post_latency.observe(elapsed)
    if request.app[CONFIG].access_log and access_log.isEnabledFor(logging.INFO):
        access_log.info("request", extra={
            "method": method, "path": request.path, "status": status,
            "duration_ms": round(elapsed * 1000, 3), "server_id": _server_id(request, response),
        })


def _server_id(request: web.Request, response: web.StreamResponse | None) -> str:
    """The X-Served-By name: already on a live stream's headers (its transport is gone by now)."""
    if response is not None and "X-Served-By" in response.headers:
        return response.headers["X-Served-By"]
    return served_by(request)


def served_by(request: web.Request) -> str:
    """--server-id, else the address the request came in on: read once per connection (it is a
    getsockname(2) each time, and every answer carries it)."""
    if request.app[SERVER_ID] or request.transport is None:
        return request.app[SERVER_ID]
    protocol = request.protocol
    if not isinstance(protocol, EdgeRequestHandler):  # an app served by a plain aiohttp runner
        return _local_address(request.transport)
    if not protocol.local_address:
        protocol.local_address = _local_address(request.transport)
    return protocol.local_address


def _local_address(transport: asyncio.BaseTransport) -> str:
    host, port = transport.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The public app's middleware: identity (auth.identify), then the handler, every failure of
    the two in the one error shape (errors.error_answer), and the answer observed as sent. One
    aiohttp layer for the three: each layer costs every request a partial and a coroutine."""
    started = time.perf_counter()
    metrics = request.app[METRICS]
    try:
        try:
            response = await identify(request)
            if response is None:
                response = await handler(request)
        except Exception as e:
            response = error_answer(request, e)  # raises again what is no error (a redirect)
    except web.HTTPException as e:  # redirects and the like pass as raised
        _observe(request, e.status, started, metrics)
        raise
    except BaseException:  # cancelled: the client went away
        _observe(request, CLIENT_GONE, started, metrics)
        raise
    status = response.status
    if status >= 400 and request.method == "POST" and _route(request) == POST_ROUTE:
        metrics.rejected.inc(_rejection_code(response))
    _observe(request, status, started, metrics, response)
    return response
