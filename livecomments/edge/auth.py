"""Bearer tokens on requests: who posts, and whether they may read when streams are private
(the tokens themselves: livecomments/tokens.py)."""

from __future__ import annotations

from aiohttp import web

from livecomments.edge.errors import Handler
from livecomments.edge.keys import CONFIG
from livecomments.tokens import Authenticator, Identity, Unauthorized

# Reads guarded by auth_streams; every other /v1/ method than these reads needs a token once a key is set.
READ_ROUTES = frozenset({"/v1/videos/{video_id}/stream", "/v1/videos/{video_id}/comments", "/v1/videos/{video_id}"})
READ_METHODS = frozenset({"GET", "HEAD"})


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
USER = web.RequestKey("user", Identity)  # the Identity of an authenticated request (absent when anonymous)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>'", invalid=True)
        return token.strip()
    if request.method in READ_METHODS:  # EventSource cannot set headers; the access log never prints the query
        return request.query.get("access_token")
    return None


def _needs_token(request: web.Request, authenticator: Authenticator | None) -> bool:
    if authenticator is None or request.method == "OPTIONS" or not request.path.startswith("/v1/"):
        return False
    if request.method in READ_METHODS:
        resource = request.match_info.route.resource
        return request.app[CONFIG].auth_streams and resource is not None and resource.canonical in READ_ROUTES
    return True


@web.middleware
async def identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sets request[USER] where a token is needed (or 401s), before any handler reads the body."""
    authenticator = request.app.get(AUTHENTICATOR)
    if _needs_token(request, authenticator):
        assert authenticator is not None
        token = _bearer(request)
        if token is None:
            raise Unauthorized("this needs a bearer token: Authorization: Bearer <token>", invalid=False)
        request[USER] = authenticator.verify(token)
    return await handler(request)
