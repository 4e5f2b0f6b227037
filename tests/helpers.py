"""Small HTTP helpers shared by tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # the JSON answer (None when the answer is not JSON)
    headers: CIMultiDictProxy[str]


async def post_reply(session: aiohttp.ClientSession, base: str, video: str, text: str = "hi",
                     author: str | None = "ana", *, key: str | None = None, token: str | None = None,
                     headers: Mapping[str, str] | None = None, **kwargs: Any) -> Reply:
    """POST a comment as any client would: `author=None` leaves it out of the body (a token names
    it), `key` is an Idempotency-Key, `token` a bearer token; other kwargs go to session.post."""
    sent = dict(headers or {})
    if key is not None:
        sent["Idempotency-Key"] = key
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    body = {"text": text} if author is None else {"text": text, "author": author}
    async with session.post(f"{base}/v1/videos/{video}/comments", json=body, headers=sent, **kwargs) as r:
        answer = await r.json() if r.content_type == "application/json" else None
        return Reply(r.status, answer, r.headers)


async def post(session: aiohttp.ClientSession, base: str, video: str, text: str = "hi",
               author: str | None = "ana", *, expect: int = 201, **kwargs: Any) -> dict[str, Any]:
    """POST a comment (see post_reply for the options), assert the status is `expect` and return
    the JSON answer: the stored comment, or the error."""
    reply = await post_reply(session, base, video, text, author, **kwargs)
    assert reply.status == expect, (reply.status, reply.body)
    return reply.body


async def history(session: aiohttp.ClientSession, base: str, video: str, **params: Any) -> dict[str, Any]:
    """One page of a video's comments (newest first), as GET …/comments answers it."""
    async with session.get(f"{base}/v1/videos/{video}/comments", params=params) as r:
        body = await r.json()
        assert r.status == 200, body
        return body


async def all_comments(session: aiohttp.ClientSession, base: str, video: str) -> list[dict[str, Any]]:
    """Every stored comment of a video, oldest first, paging back from the head."""
    comments: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        page = await history(session, base, video, **params)
        comments += page["comments"]
        if page["next"] is None:
            return sorted(comments, key=lambda c: c["seq"])
        params["before"] = page["next"]


async def all_seqs(session: aiohttp.ClientSession, base: str, video: str) -> list[int]:
    """Every stored seq of a video, oldest first."""
    return [c["seq"] for c in await all_comments(session, base, video)]


async def metric(session: aiohttp.ClientSession, base: str, name: str) -> float:
    """The value of an unlabelled metric from /metrics."""
    async with session.get(f"{base}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


async def status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as r:
        return r.status


async def until_status(session: aiohttp.ClientSession, url: str, want: int, timeout: float = 10) -> None:
    """Poll another process's state that has no event to await (readiness), bounded."""
    async with asyncio.timeout(timeout):
        while await status(session, url) != want:
            await asyncio.sleep(0.05)


async def until_metric(session: aiohttp.ClientSession, base: str, name: str, want: float,
                       timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while await metric(session, base, name) != want:
            await asyncio.sleep(0.02)
