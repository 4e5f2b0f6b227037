"""Per-request observation: the request metrics and the access log, in one outermost middleware.

Outermost, so it sees every answer as the client gets it, refusals of the other middlewares
included. A stream's line and count come when its handler returns, which is when the stream
goes live (realtime.py hands the connection to its Viewer then), not when it ends: the
duration is the time to go live, and livecomments_connections counts the open ones.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from livecomments.edge.errors import ERROR_CODE, Handler
from livecomments.edge.keys import CONFIG, METRICS, SERVER_ID
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
    metrics.http_requests.labels(route, method if method in METHODS else "other", str(status)).inc()
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
    """--server-id, else the address the request came in on."""
    if request.app[SERVER_ID] or request.transport is None:
        return request.app[SERVER_ID]
    host, port = request.transport.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
    except web.HTTPException as e:  # redirects and the like pass the error middleware as raised
        _observe(request, e.status, started, metrics)
        raise
    except BaseException:  # cancelled (the client went away) or a failure the error middleware let through
        _observe(request, CLIENT_GONE, started, metrics)
        raise
    status = response.status
    if status >= 400 and request.method == "POST" and _route(request) == POST_ROUTE:
        metrics.rejected.labels(_rejection_code(response)).inc()
    _observe(request, status, started, metrics, response)
    return response
