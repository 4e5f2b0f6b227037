"""Moderation over HTTP: delete a comment, ban a user from a video, slow mode; and the
checks a post passes before it is stored (bans, slow mode).

Bans and slow mode live in storage, so every writer of one database shares them. A post reads
them through this process's PolicyCache (storage/moderation_cache.py), not from storage each
time: a ban, or slow mode turned on, on any writer takes effect on every writer within
FRESH_FOR (1 s); on the writer that made it, at once; an unban or slow mode lowered or lifted,
at once everywhere. A slow-mode slot is claimed atomically in storage (a conditional upsert),
so two writers cannot both accept a user's post within one interval. Every time these decide
by is the storage's clock, never this process's (storage/base.py, Moderation): writers on
several machines disagree about the time, the database does not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
from aiohttp import web

from livecomments.edge.auth import USER
from livecomments.edge.clientaddr import client_key
from livecomments.edge.keys import STORAGE, STRATEGY
from livecomments.errors import ApiError, dumps, retry_after
from livecomments.model import parse_video_id
from livecomments.storage.base import MAX_SLOW_MODE_S, Moderation
from livecomments.storage.errors import NoSuchComment, NotYourComment
from livecomments.storage.moderation_cache import Policy, PolicyCache
from livecomments.tokens import MAX_SUB, Identity, Unauthorized

MAX_BAN_S = 10 * 365 * 24 * 3600
ERASE_BATCH = 500  # comments one DELETE /v1/users/{sub}/comments deletes at most: one call stays short
POLICIES = web.AppKey("policies", PolicyCache)


async def policy_cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """The writer's cache of bans and slow mode, and its generation poll (after storage_ctx)."""
    cache = app[POLICIES] = PolicyCache(app[STORAGE])
    poll = asyncio.create_task(cache.run())
    yield
    poll.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poll


class SlowMode(ApiError):
    def __init__(self, wait: float, interval: int) -> None:
        headers = retry_after(wait)
        super().__init__(429, "slow_mode",
                         f"slow mode: one comment per {interval} s here; retry in {headers['Retry-After']} s", headers)


def moderation_of(request: web.Request) -> Moderation:
    """The storage, as this module uses it: bans, slow mode, deletes."""
    return request.app[STORAGE]


def poster(request: web.Request) -> str:
    """Who posts, as slow mode and Idempotency-Keys tell posters apart: the token's sub when
    authenticated ("u:SUB"), else the client's address ("a:ADDRESS", behind trusted proxies the
    forwarded one)."""
    user = request.get(USER)
    return "u:" + user.sub if user is not None else "a:" + (client_key(request) or "unknown")


async def check_post(request: web.Request, video_id: str, idempotency_key: str | None) -> None:
    """Refuse a post from a user banned from the video, or too soon under its slow mode.
    Moderators are exempt. Call after validation: a slow-mode claim is the post's first write."""
    user = request.get(USER)
    if user is not None and user.moderator:
        return
    policies, sub = request.app[POLICIES], None if user is None else user.sub
    slow_mode_s = policies.cached(video_id, sub)  # no await on the common path
    policy = Policy(None, slow_mode_s, True) if slow_mode_s is not None else await policies.read(video_id, sub)
    wait = await _admit(request, video_id, policy, idempotency_key)
    if wait > 0 and policy.cached:  # refuse by storage's interval, not a cached one (lowered or lifted since?)
        policy = await policies.read(video_id, sub)
        wait = await _admit(request, video_id, policy, idempotency_key)
    if wait > 0:
        raise SlowMode(wait, policy.slow_mode_s)


async def _admit(request: web.Request, video_id: str, policy: Policy, idempotency_key: str | None) -> float:
    """403 when banned; under slow mode, claim the poster's slot: the seconds left to wait (0: admitted)."""
    if policy.banned_until is not None:
        ends = datetime.fromtimestamp(policy.banned_until, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        raise ApiError(403, "banned", f"you are banned from posting to this video until {ends}")
    if not policy.slow_mode_s:
        return 0.0
    return await moderation_of(request).claim_slot(video_id, poster(request), policy.slow_mode_s, idempotency_key)


def _identity(request: web.Request) -> Identity:
    user: Identity | None = request.get(USER)
    if user is None:  # posting is open (no key configured): nobody can prove who they are
        raise Unauthorized("moderation needs a bearer token, and a JWT key configured on the server", invalid=False)
    return user


def _moderator(request: web.Request) -> Identity:
    user = _identity(request)
    if not user.moderator:
        raise ApiError(403, "forbidden", "this needs a moderator's token")
    return user


async def _json_object(request: web.Request) -> dict[str, object]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "body must be a JSON object")
    return body


def _int_field(body: dict[str, object], name: str, high: int) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise ApiError(422, f"invalid_{name}", f"{name} must be an integer from 0 to {high}")
    return value


async def delete_comment(request: web.Request) -> web.Response:
    video_id = parse_video_id(request.match_info["video_id"])
    raw = request.match_info["seq"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18 and int(raw) > 0):
        raise ApiError(404, "not_found", f"{video_id} has no comment {raw}")
    user = _identity(request)
    try:
        entry = await moderation_of(request).delete(video_id, int(raw), by=user.sub, moderator=user.moderator)
    except NoSuchComment:
        raise ApiError(404, "not_found", f"{video_id} has no comment {raw}") from None
    except NotYourComment:
        raise ApiError(403, "forbidden", "only a moderator or its own user may delete a comment") from None
    if entry is not None:  # the log's next entry: viewers get `event: delete` in order with the comments
        await request.app[STRATEGY].publish(entry)
    return web.Response(status=204)


async def put_settings(request: web.Request) -> web.Response:
    video_id = parse_video_id(request.match_info["video_id"])
    _moderator(request)
    body = await _json_object(request)
    slow_mode_s = _int_field(body, "slow_mode_s", MAX_SLOW_MODE_S)
    await moderation_of(request).set_slow_mode(video_id, slow_mode_s)
    request.app[POLICIES].drop()  # this writer at once; the others within FRESH_FOR
    return web.json_response({"video_id": video_id, "slow_mode_s": slow_mode_s}, dumps=dumps)


async def post_ban(request: web.Request) -> web.Response:
    """ttl_s > 0 bans (201 with the ban); ttl_s 0 lifts a ban (204)."""
    video_id = parse_video_id(request.match_info["video_id"])
    _moderator(request)
    body = await _json_object(request)
    user = body.get("user")
    if not isinstance(user, str) or not 0 < len(user) <= MAX_SUB:  # a token with a longer sub is refused
        raise ApiError(422, "invalid_user", f"user must be a token sub of 1-{MAX_SUB} characters")
    ttl_s = _int_field(body, "ttl_s", MAX_BAN_S)
    until = await moderation_of(request).ban(video_id, user, ttl_s)  # from the storage's clock
    request.app[POLICIES].drop()  # this writer at once; the others within FRESH_FOR
    if until is None:
        return web.Response(status=204)
    return web.json_response({"video_id": video_id, "user": user, "until": until}, status=201, dumps=dumps)


async def erase_user(request: web.Request) -> web.Response:
    """Delete a user's comments on every video (a privacy request), at most ERASE_BATCH per call:
    each deleted as a moderator's delete is (an entry in its video's log, published, so viewers
    get `event: delete` and resumes see it). `done` false: call again; the next call goes on."""
    sub = request.match_info["sub"]
    if not 0 < len(sub) <= MAX_SUB:
        raise ApiError(400, "invalid_user", f"user must be a token sub of 1-{MAX_SUB} characters")
    moderator = _moderator(request)
    entries, done = await moderation_of(request).erase_user(sub, by=moderator.sub, limit=ERASE_BATCH)
    strategy = request.app[STRATEGY]
    for entry in entries:  # each video's in seq order, as delete_comment publishes one
        await strategy.publish(entry)
    return web.json_response({"user": sub, "deleted": len(entries), "done": done}, dumps=dumps,
                             headers={"Cache-Control": "no-store"})




def add_routes(app: web.Application) -> None:
    app.router.add_delete("/v1/videos/{video_id}/comments/{seq}", delete_comment)
    app.router.add_put("/v1/videos/{video_id}/settings", put_settings)
    app.router.add_post("/v1/videos/{video_id}/bans", post_ban)
    app.router.add_delete("/v1/users/{sub}/comments", erase_user)
