"""POST /internal/v1/deliver: dispatcher pushes, signed with the cluster secret (see signing.py).

Refusals cost the sender, not this process: the signature headers are checked (present,
well-formed, fresh) before a byte of the body is read, a declared Content-Length over the
limit is refused unread, and a body that does not arrive within READ_TIMEOUT is dropped.
Only then is the HMAC checked over the body, and a replay refused: 401, nothing delivered.
What passes is parsed (all or nothing: 400) and handed to the strategy (`receive`), which
counts it as received and delivers it through the same door as a broker message.

Where it listens: `serve()` gives a dispatcher realtime process a listener of its own for
this endpoint, off the public port: `internal_port`, or a free port on the same host when
that is 0, advertised through the registry. Pushes share the public port only when the
process cannot have its own (an in-process test server) or when `advertise_url` is given
without `internal_port` (the operator said where pushes arrive). Behind the balancer,
/internal/ is never routed (lbconfig.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from livecomments.edge.keys import CONFIG, STRATEGY
from livecomments.edge.server import close_unread
from livecomments.errors import ApiError
from livecomments.model import Comment
from livecomments.strategies.signing import PATH, SIGNATURE, TIMESTAMP, Verifier, push_body_limit

READ_TIMEOUT = 5.0  # seconds for a whole push body; pushers give up after 2 s anyway


def _parse(body: bytes) -> list[Comment]:
    try:
        items = orjson.loads(body)
        if not isinstance(items, list):
            raise TypeError("not a list")
        return [Comment.from_dict(o) for o in items]
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "bad_request", "malformed push") from None


async def _read(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        close_unread(request)
        raise ApiError(413, "body_too_large", f"push is over {limit} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    close_unread(request)
                    raise ApiError(413, "body_too_large", f"push is over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        close_unread(request)
        raise ApiError(408, "body_timeout", f"push body not received within {READ_TIMEOUT:g} s") from None
    return b"".join(chunks)


def handler(app: web.Application) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The deliver handler of `app` (the realtime app), mountable on another app/port."""
    config = app[CONFIG]
    verifier = Verifier(config.cluster_secret.encode())
    limit = push_body_limit(config.max_text, config.max_author)

    async def deliver(request: web.Request) -> web.Response:
        timestamp, sig = request.headers.get(TIMESTAMP), request.headers.get(SIGNATURE)
        problem = verifier.precheck(timestamp, sig)
        if problem:
            close_unread(request)
            raise ApiError(401, "unauthorized", problem)
        body = await _read(request, limit)
        problem = verifier.check(timestamp, sig, body)
        if problem:
            raise ApiError(401, "unauthorized", problem)
        comments = _parse(body)  # all or nothing: parsed before anything is delivered
        app[STRATEGY].receive(comments, len(body))
        return web.Response(status=204)

    return deliver


def add_routes(target: web.Application, app: web.Application) -> None:
    target.router.add_post(PATH, handler(app))
