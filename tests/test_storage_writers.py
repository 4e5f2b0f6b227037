"""Two real writer processes on one database (PostgreSQL and SQLite), driven over HTTP."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp

from tests.helpers import all_seqs, history, post

VIDEOS = [f"v{i}" for i in range(8)]


async def _post(session: aiohttp.ClientSession, base: str, video: str, text: str, author: str = "ana",
                key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {} if key is None else {"Idempotency-Key": key}
    async with session.post(f"{base}/v1/videos/{video}/comments", json={"text": text, "author": author},
                            headers=headers) as r:
        return r.status, await r.json()


def _writers(spawn, storage: str, n: int = 2, *extra: str) -> list[str]:
    return [spawn("--role", "both", "--storage", storage, "--log-level", "warning", *extra).url for _ in range(n)]



async def test_two_writers_cycling_over_videos_never_deadlock(spawn, session, postgres_server):
    # Each batch bumps the heads of several videos: in arrival order, two writers locked them in
    # opposite orders and PostgreSQL killed one transaction of every deadlock (500s, lost batches).
    writers = _writers(spawn, postgres_server.database())
    counter = itertools.count()
    statuses: list[int] = []

    async def client(base: str) -> None:
        while (i := next(counter)) < 1600:
            status, _ = await _post(session, base, VIDEOS[i % len(VIDEOS)], f"c{i}")
            statuses.append(status)

    async with asyncio.timeout(120):
        await asyncio.gather(*(client(writers[n % 2]) for n in range(64)))
    assert statuses.count(201) == 1600, sorted(set(statuses))
    for video in VIDEOS:
        assert await all_seqs(session, writers[0], video) == list(range(1, 201))


async def test_one_key_at_two_writers_at_once_gets_one_comment(spawn, session, storage_url):
    writers = _writers(spawn, storage_url)

    async def twice(i: int) -> list[tuple[int, dict[str, Any]]]:
        return await asyncio.gather(*(_post(session, base, "k", f"same {i}", key=f"key-{i}") for base in writers))

    async def unrelated(i: int) -> tuple[int, dict[str, Any]]:
        return await _post(session, writers[i % 2], "k", f"other {i}")

    async with asyncio.timeout(60):
        pairs, others = await asyncio.gather(
            asyncio.gather(*(twice(i) for i in range(60))), asyncio.gather(*(unrelated(i) for i in range(60))),
        )
    for (s1, first), (s2, retry) in pairs:
        assert (s1, s2) == (201, 201), (first, retry)
        assert first == retry  # the same comment, same seq, from either writer
    assert [s for s, _ in others] == [201] * 60
    assert await all_seqs(session, writers[1], "k") == list(range(1, 121))  # 60 keyed + 60 others, once each


async def test_a_reused_key_is_refused_at_either_writer(spawn, session, storage_url):
    writers = _writers(spawn, storage_url)
    status, first = await _post(session, writers[0], "r", "hello", key="k1")
    assert status == 201
    for base in writers:
        status, body = await _post(session, base, "r", "something else", key="k1")
        assert (status, body["error"]["code"]) == (422, "idempotency_key_reused"), body
        status, body = await _post(session, base, "r", "hello", author="bob", key="k1")
        assert (status, body["error"]["code"]) == (422, "idempotency_key_reused"), body
        assert await _post(session, base, "r", "hello", key="k1") == (201, first)
    assert await all_seqs(session, writers[1], "r") == [1]


async def test_two_writers_share_seq_history_and_cursors(spawn, session, storage_url):
    # No cursor_secret configured: each writer finds the database's own, so a cursor from one
    # pages on at the other.
    writers = _writers(spawn, storage_url)
    await asyncio.gather(*(post(session, writers[i % 2], "h", f"c{i}") for i in range(30)))
    page = await history(session, writers[0], "h", limit=10)
    assert [c["seq"] for c in page["comments"]] == list(range(30, 20, -1))
    page = await history(session, writers[1], "h", limit=10, before=page["next"])
    assert [c["seq"] for c in page["comments"]] == list(range(20, 10, -1))
    forward = await history(session, writers[0], "h", limit=5, after=page["next"])
    assert [c["seq"] for c in forward["comments"]] == [12, 13, 14, 15, 16]
