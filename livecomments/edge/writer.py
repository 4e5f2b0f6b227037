"""Writer role: accept comments (store, then publish) and serve history pages."""

from __future__ import annotations

from dataclasses import replace

import orjson
from aiohttp import web
from multidict import MultiMapping

from livecomments.edge import cursor, moderation
from livecomments.edge.auth import USER, optional_user
from livecomments.edge.keys import CONFIG, METRICS, STORAGE, STRATEGY
from livecomments.edge.ratelimit import limit_post
from livecomments.errors import ApiError, dumps
from livecomments.model import Comment, parse_new_comment, parse_video_id
from livecomments.storage.base import CommentLog

MAX_KEY = 128


def scoped_key(poster: str, key: str) -> str:
    """The Idempotency-Key as storage keeps it (unique per video): prefixed with its poster, so
    another poster's same key is his own, never an answer about ours. The newline cannot occur in
    a key (printable ASCII only), so no two (poster, key) pairs meet. No schema change: a key kept
    before this prefix (an existing database) matches no post any more, so a retry that spans the
    upgrade is stored as a new comment; such keys leave with their comments at retention."""
    return f"{poster}\n{key}"


async def post_comment(request: web.Request) -> web.Response:
    video_id = parse_video_id(request.match_info["video_id"])
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the comment as application/json")
    key = check_idempotency_key(request.headers.get("Idempotency-Key"), "Idempotency-Key")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "body is not valid JSON") from None
    comment = await accept_post(request, video_id, body, key)
    # json_response's answer, without its str round trip (orjson makes bytes): on every post
    return web.Response(body=comment.to_json(), status=201, content_type="application/json", charset="utf-8")


def check_idempotency_key(key: str | None, name: str) -> str | None:
    """A post's Idempotency-Key (the header, or a WebSocket post's id), or ApiError."""
    if key is not None and not (0 < len(key) <= MAX_KEY and key.isascii() and key.isprintable()):
        raise ApiError(400, "invalid_idempotency_key", f"{name} must be 1-{MAX_KEY} printable ASCII characters")
    return key


async def accept_post(request: web.Request, video_id: str, body: object, key: str | None) -> Comment:
    """A parsed post: validation, identity, rate limit, bans and slow mode, stored under the
    poster's Idempotency-Key, published. The POST handler and a WebSocket post (edge/ws.py:
    its upgrade request, with the socket's identity in request[USER]) share it. Raises
    ApiError or StorageError, and then nothing was stored."""
    config = request.app[CONFIG]
    user = request.get(USER)
    if user is not None and isinstance(body, dict):  # the token names the author, never the body
        body["author"] = user.author
    new = parse_new_comment(video_id, body, max_text=config.max_text, max_author=config.max_author)
    if user is not None:
        new = replace(new, user=user.sub)  # kept for moderation (own deletes); never in the public JSON
    # Only a well-formed post takes a token (edge_middleware authenticated it already): a
    # malformed one (400/413/415/422) cost validation only, and leaves the poster's burst whole.
    await limit_post(request)
    await moderation.check_post(request, video_id, key)
    log: CommentLog = request.app[STORAGE]
    comment = await log.add(new, None if key is None else scoped_key(moderation.poster(request), key))
    request.app[METRICS].stored.inc()
    await request.app[STRATEGY].publish(comment)  # queued, never waits: realtime repairs what is lost
    return comment


async def get_comments(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    video_id = parse_video_id(request.match_info["video_id"])
    query = request.query
    limit = _int_param(query, "limit", 50, 1, config.page_limit)
    log: CommentLog = request.app[STORAGE]
    secret = cursor.signing_key(config.cursor_secret, log.cursor_secret)
    given = [name for name in ("before", "after", "offset") if name in query]
    if len(given) > 1:
        raise ApiError(400, "conflicting_parameters", f"use only one of {', '.join(given)}")
    before = cursor.decode(secret, video_id, query["before"]) if "before" in query else None
    after = cursor.decode(secret, video_id, query["after"]) if "after" in query else None
    # offset= is here to show why cursors win: it re-reads and skips `offset` rows,
    # and rows inserted between pages shift it (duplicates on the next page).
    offset = _int_param(query, "offset", 0, 0, 10**9)
    # One row more than the page, in the same query: it says whether a next page exists, so the
    # last page has no cursor (never a cursor to an empty page).
    comments = await log.page(video_id, before=before, after=after, limit=limit + 1, offset=offset)
    more = len(comments) > limit
    comments = comments[:limit]
    nxt = cursor.encode(secret, video_id, comments[-1].seq) if more else None
    reader = await optional_user(request)
    if reader is not None and reader.moderator:  # who posted (the token's sub, null when posting was open), for bans
        body = {"comments": [{**c.to_dict(), "user": c.user} for c in comments], "next": nxt}
        # A page naming users must never be served to anyone else from a cache, shared or not.
        return web.json_response(body, dumps=dumps, headers={"Cache-Control": "private, no-store", "Vary": "Authorization"})
    body = {"comments": [c.to_dict() for c in comments], "next": nxt}
    return web.json_response(body, dumps=dumps, headers={"Vary": "Authorization"})


def _int_param(query: MultiMapping[str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10) or not low <= int(raw) <= high:
        raise ApiError(400, f"invalid_{name}", f"{name} must be an integer from {low} to {high}")
    return int(raw)




def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/videos/{video_id}/comments", post_comment)
    app.router.add_get("/v1/videos/{video_id}/comments", get_comments)
    moderation.add_routes(app)
