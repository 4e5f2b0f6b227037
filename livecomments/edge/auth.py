"""Bearer tokens on requests: who posts, and whether they may read when streams are private
(the tokens themselves: livecomments/tokens.py; keys from a JWKS endpoint: livecomments/jwks.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from livecomments.config import Config
from livecomments.edge.keys import CONFIG
from livecomments.edge.stream import STREAM_PATH, expired_stream
from livecomments.jwks import JwksKeys
from livecomments.tokens import Authenticator, Identity, TokenExpired, Unauthorized, load_keys

# Reads guarded by auth_streams; every other /v1/ method than these reads needs a token once a key is set.
READ_ROUTES = frozenset({STREAM_PATH, "/v1/videos/{video_id}/comments", "/v1/videos/{video_id}"})
READ_METHODS = frozenset({"GET", "HEAD"})


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
JWKS = web.AppKey("jwks", JwksKeys)
USER = web.RequestKey("user", Identity)  # the Identity of an authenticated request (absent when anonymous)


def install_authenticator(app: web.Application, config: Config) -> bool:
    """The authenticator of the configured keys (and the JWKS fetcher's context); False when no
    key is configured: posting is open."""
    keys = load_keys(config.auth_jwt_secret, config.auth_jwt_public_key, config.auth_jwt_previous_secret)
    if not keys and not config.auth_jwks_url:
        return False
    fetched = None
    if config.auth_jwks_url:
        fetched = app[JWKS] = JwksKeys(config.auth_jwks_url, cooldown=config.auth_jwks_cooldown)
        app.cleanup_ctx.append(_jwks_ctx)
    app[AUTHENTICATOR] = Authenticator(keys, fetched=fetched, audience=config.auth_jwt_audience,
                                       issuer=config.auth_jwt_issuer, leeway=config.auth_jwt_leeway,
                                       max_author=config.max_author)
    return True


async def _jwks_ctx(app: web.Application) -> AsyncIterator[None]:
    """The key set is fetched before the port opens; a failure is logged, not fatal (jwks.py)."""
    await app[JWKS].start()
    yield
    await app[JWKS].close()


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


async def optional_user(request: web.Request) -> Identity | None:
    """Who sent a request that needs no token (a public read): the identity the middleware set, or
    the bearer token it carries verified here. A token that does not verify reads as anonymous:
    the answer stays the public one."""
    user = request.get(USER)
    authenticator = request.app.get(AUTHENTICATOR)
    if user is not None or authenticator is None:
        return user
    try:
        token = _bearer(request)
        return None if token is None else await authenticator.verify(token)
    except Unauthorized:
        return None


def _needs_token(request: web.Request, authenticator: Authenticator | None) -> bool:
    if authenticator is None or request.method == "OPTIONS" or not request.path.startswith("/v1/"):
        return False
    if request.method in READ_METHODS:
        return request.app[CONFIG].auth_streams and _route(request) in READ_ROUTES
    return True


def _route(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


async def identify(request: web.Request) -> web.StreamResponse | None:
    """Sets request[USER] where a token is needed (or raises Unauthorized: a 401), before any
    handler reads the body (edge/access.py's edge_middleware calls it first). An SSE stream whose
    token has expired gets its answer here instead, 200 with the error in band: an EventSource
    never retries a 401, and its client must learn to fetch a fresh token."""
    authenticator = request.app.get(AUTHENTICATOR)
    if not _needs_token(request, authenticator):
        return None
    assert authenticator is not None
    token = _bearer(request)
    if token is None:
        raise Unauthorized("this needs a bearer token: Authorization: Bearer <token>", invalid=False)
    try:
        request[USER] = await authenticator.verify(token)
    except TokenExpired as e:
        if request.method == "GET" and _route(request) == STREAM_PATH:
            return expired_stream(e)
        raise
    return None
