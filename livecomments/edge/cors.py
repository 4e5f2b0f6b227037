"""CORS for `cors_origins`: preflights answered here, Access-Control-Allow-Origin on real answers.

Tokens travel in Authorization, never in cookies, so credentials are not allowed and an
allowed origin is echoed back (or `*` when any origin is). An origin not listed gets no
Access-Control-* header at all, its preflight included (a 204 with none, not a 405): the browser
then keeps the answer from the page.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from livecomments.edge.errors import Handler

ALLOW_METHODS = "GET, POST, PUT, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
# Not CORS-safelisted, and what a page needs to read: when to retry, why it was refused, who served it.
EXPOSE_HEADERS = "Retry-After, WWW-Authenticate, X-Served-By"
MAX_AGE = "600"  # seconds a browser may reuse a preflight (Chromium caps it at 7200)


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: frozenset[str]

    @classmethod
    def of(cls, origins: tuple[str, ...]) -> CorsPolicy:
        return cls(frozenset(origin.rstrip("/") for origin in origins))

    def allow_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for `origin`, or None when it is not allowed."""
        if origin is None:
            return None
        if "*" in self.origins:
            return "*"
        return origin if origin in self.origins else None


CORS_POLICY = web.AppKey("cors_policy", CorsPolicy)


def _add_vary(response: web.StreamResponse) -> None:
    # The answer depends on Origin: a cache must not serve one origin's answer to another.
    vary = response.headers.get("Vary")
    if vary is None:
        response.headers["Vary"] = "Origin"
    elif "origin" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Origin"


@web.middleware
async def preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every preflight gets 204 here, before routing's 405 and without a token: an allowed origin's
    with the Access-Control-* headers, any other origin's with none (and Vary: Origin, added on
    the way out), so its browser refuses the request itself, as with any CORS server. An OPTIONS
    without Access-Control-Request-Method is no preflight and goes on to routing."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        allowed = request.app[CORS_POLICY].allow_origin(request.headers.get("Origin"))
        if allowed is None:
            return web.Response(status=204)
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
        })
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, streams and errors included, before its headers leave."""
    _add_vary(response)
    if "Access-Control-Allow-Origin" in response.headers:  # a preflight answered above
        return
    allowed = request.app[CORS_POLICY].allow_origin(request.headers.get("Origin"))
    if allowed is not None:
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


def install(app: web.Application, origins: tuple[str, ...]) -> None:
    app[CORS_POLICY] = CorsPolicy.of(origins)
    app.on_response_prepare.append(add_cors_headers)
