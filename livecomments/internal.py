"""POST /internal/v1/deliver: dispatcher pushes, signed with the cluster secret.

A push is `X-Livecomments-Timestamp: <unix seconds>` and `X-Livecomments-Signature:
hex(HMAC-SHA256(secret, timestamp + "." + body))` over a JSON list of comments. A request
older or newer than MAX_SKEW, or whose signature was already seen within that window
(a replay), is refused like an unsigned one: 401, and nothing is delivered.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from livecomments.app_keys import CONFIG, HUB, METRICS
from livecomments.errors import ApiError
from livecomments.model import Comment

PATH = "/internal/v1/deliver"
TIMESTAMP = "X-Livecomments-Timestamp"
SIGNATURE = "X-Livecomments-Signature"
MAX_SKEW = 30.0
MAX_BODY = 4 << 20  # a coalesced batch; the pusher keeps them far smaller


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes) -> dict[str, str]:
    timestamp = f"{time.time():.3f}"
    return {TIMESTAMP: timestamp, SIGNATURE: signature(secret, timestamp, body),
            "Content-Type": "application/json"}


class Verifier:
    """Checks signature and freshness, and remembers accepted signatures for the window."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._seen: dict[str, float] = {}  # signature -> when it stops being acceptable anyway

    def check(self, timestamp: str | None, sig: str | None, body: bytes) -> str:
        """'' when the request is authentic and fresh, else why not."""
        if not self._secret:
            return "this server has no cluster secret: pushes are refused"
        if not timestamp or not sig:
            return "unsigned request"
        try:
            sent = float(timestamp)
        except ValueError:
            return "bad timestamp"
        now = time.time()
        if not abs(now - sent) <= MAX_SKEW:
            return "stale request"
        expected = signature(self._secret, timestamp, body).encode()
        if not hmac.compare_digest(sig.encode(errors="replace"), expected):
            return "bad signature"
        self._forget(now)
        if sig in self._seen:
            return "replayed request"
        self._seen[sig] = sent + MAX_SKEW
        return ""

    def _forget(self, now: float) -> None:
        # Insertion order is arrival order, close enough to expiry order: stop at the first live one.
        for sig, until in list(self._seen.items()):
            if until >= now:
                break
            del self._seen[sig]


def _parse(body: bytes) -> list[Comment]:
    try:
        items = orjson.loads(body)
        if not isinstance(items, list):
            raise TypeError("not a list")
        return [Comment.from_dict(o) for o in items]
    except (ValueError, KeyError, TypeError) as e:
        raise ApiError(400, "bad_request", f"malformed push: {e}") from None


async def _read(request: web.Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, "body_too_large", f"push is over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def handler(app: web.Application) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The deliver handler of `app` (the realtime app), mountable on another app/port."""
    verifier = Verifier(app[CONFIG].cluster_secret.encode())

    async def deliver(request: web.Request) -> web.Response:
        body = await _read(request)
        problem = verifier.check(request.headers.get(TIMESTAMP), request.headers.get(SIGNATURE), body)
        if problem:
            raise ApiError(401, "unauthorized", problem)
        comments = _parse(body)  # all or nothing: parsed before anything is delivered
        metrics, hub = app[METRICS], app[HUB]
        metrics.received.inc(len(comments))
        metrics.received_bytes.inc(len(body))
        for comment in comments:
            hub.deliver(comment)
        return web.Response(status=204)

    return deliver


def add_routes(target: web.Application, app: web.Application) -> None:
    target.router.add_post(PATH, handler(app))
