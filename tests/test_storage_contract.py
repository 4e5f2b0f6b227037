"""One contract, every storage backend: real SQLite files and a real PostgreSQL, each with one
writer and with two writers (two storage objects, as two processes have) on one database."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from livecomments.backends import open_storage
from livecomments.model import NewComment
from livecomments.storage.base import Storage
from livecomments.storage.errors import IdempotencyKeyReused

BACKENDS = ["sqlite", "sqlite-no-group-commit", "postgres", "sqlite-two-writers", "postgres-two-writers"]


class TwoWriters:
    """Two real storages on one database: every call goes to the next one in turn, so posts
    interleave between them and each reads what the other wrote."""

    def __init__(self, first: Storage, second: Storage) -> None:
        self.stores = (first, second)
        self._turn = itertools.count()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stores[next(self._turn) % 2], name)


async def _open(url: str, n: int, **options: Any) -> list[Storage]:
    return [await open_storage(url, **options) for _ in range(n)]


@pytest.fixture(params=BACKENDS)
async def storage(request, tmp_path) -> AsyncIterator[Any]:
    if request.param.startswith("postgres"):
        url = request.getfixturevalue("postgres_server").database()
    else:
        url = f"sqlite:///{tmp_path}/contract.db"
    two = request.param.endswith("two-writers")
    stores = await _open(url, 2 if two else 1, group_commit=request.param != "sqlite-no-group-commit")
    yield TwoWriters(*stores) if two else stores[0]
    for store in stores:
        await store.close()


async def test_seq_is_per_video_contiguous_under_concurrency(storage):
    posts = [NewComment(f"v{i % 3}", "a", f"t{i}") for i in range(90)]
    comments = await asyncio.gather(*(storage.add(p) for p in posts))
    for v in ("v0", "v1", "v2"):
        assert sorted(c.seq for c in comments if c.video_id == v) == list(range(1, 31))
        assert await storage.last_seq(v) == 30
    assert await storage.last_seq("none") == 0


async def test_last_seqs_reads_many_heads_at_once(storage):
    await asyncio.gather(*(storage.add(NewComment(f"v{i % 4}", "a", f"t{i}")) for i in range(10)))
    assert await storage.last_seqs(["v0", "v1", "v2", "v3", "none"]) == {"v0": 3, "v1": 3, "v2": 2, "v3": 2, "none": 0}
    assert await storage.last_seqs([]) == {}
    many = [f"x{i}" for i in range(1200)]  # past SQLite's IN (...) chunk
    assert await storage.last_seqs([*many, "v0"]) == {**dict.fromkeys(many, 0), "v0": 3}


async def test_idempotency_key_returns_the_first(storage):
    first, again = await asyncio.gather(
        storage.add(NewComment("v", "a", "x"), "key"), storage.add(NewComment("v", "a", "x"), "key"))
    later = await storage.add(NewComment("v", "a", "x"), "key")
    assert first == again == later
    other_video = await storage.add(NewComment("w", "a", "y"), "key")  # keys are per video
    assert other_video.seq == 1 and other_video.video_id == "w"
    assert await storage.last_seq("v") == 1


async def test_a_reused_key_fails_alone(storage):
    await storage.add(NewComment("v", "a", "x"), "key")
    outcomes = await asyncio.gather(
        storage.add(NewComment("v", "a", "other text"), "key"),
        storage.add(NewComment("v", "b", "x"), "key"),  # another author
        *(storage.add(NewComment("v", "a", f"u{i}")) for i in range(8)),
        storage.add(NewComment("v", "a", "new"), "fresh"),
        storage.add(NewComment("v", "a", "not new"), "fresh"),  # the same new key, another body
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], IdempotencyKeyReused) and isinstance(outcomes[1], IdempotencyKeyReused)
    assert sum(isinstance(o, IdempotencyKeyReused) for o in outcomes[-2:]) == 1  # whichever came second
    stored = [o for o in outcomes if not isinstance(o, BaseException)]
    assert sorted(c.seq for c in stored) == list(range(2, 11))
    assert [c.seq for c in await storage.since("v", 0, 100)] == list(range(1, 11))


async def test_pages_and_since(storage):
    for i in range(1, 26):
        await storage.add(NewComment("v", "a", f"t{i}"))
    assert [c.seq for c in await storage.page("v", limit=5)] == [25, 24, 23, 22, 21]
    assert [c.seq for c in await storage.page("v", before=21, limit=3)] == [20, 19, 18]
    assert [c.seq for c in await storage.page("v", after=18, limit=3)] == [19, 20, 21]
    assert [c.seq for c in await storage.page("v", limit=3, offset=5)] == [20, 19, 18]
    assert [c.seq for c in await storage.since("v", 22, 100)] == [23, 24, 25]
    assert [c.seq for c in await storage.since("v", 0, 2)] == [1, 2]
    comment = (await storage.since("v", 0, 1))[0]
    assert (comment.video_id, comment.author, comment.text) == ("v", "a", "t1")


async def test_unicode_round_trips(storage):
    text = "gol! ⚽ — ação 🎉"
    stored = await storage.add(NewComment("v", "zoë", text))
    assert (await storage.since("v", 0, 1))[0] == stored


async def test_retention_by_count_keeps_the_newest_and_the_head(storage):
    for i in range(12):
        await storage.add(NewComment("v", "a", f"t{i}"), f"k{i}")
    await storage.add(NewComment("w", "a", "alone"))
    deleted = 0
    while n := await storage.prune(keep_comments=5, older_than=0, limit=3):  # small batches
        assert n <= 3
        deleted += n
    assert deleted == 7
    assert [c.seq for c in await storage.since("v", 0, 100)] == [8, 9, 10, 11, 12]
    assert [c.seq for c in await storage.since("w", 0, 100)] == [1]
    assert await storage.last_seqs(["v", "w"]) == {"v": 12, "w": 1}
    assert (await storage.add(NewComment("v", "a", "t0"), "k0")).seq == 13  # the pruned key is free again


async def test_retention_by_age_never_restarts_seq(storage):
    for i in range(4):
        await storage.add(NewComment("v", "a", f"t{i}"))
    assert await storage.prune(keep_comments=0, older_than=time.time() - 3600, limit=100) == 0
    assert await storage.prune(keep_comments=0, older_than=time.time() + 1, limit=100) == 4
    assert await storage.since("v", 0, 100) == []
    assert await storage.last_seq("v") == 4
    assert (await storage.add(NewComment("v", "a", "after"))).seq == 5


async def test_one_cursor_secret_per_database(storage):
    secrets = {store.cursor_secret for store in getattr(storage, "stores", (storage,))}
    assert len(secrets) == 1 and len(secrets.pop()) == 32


async def test_healthy_and_commit_hook(storage):
    seen: list[tuple[float, int]] = []
    for store in getattr(storage, "stores", (storage,)):
        store.observe_commits(lambda seconds, size: seen.append((seconds, size)))
    await asyncio.gather(*(storage.add(NewComment("v", "a", f"t{i}")) for i in range(5)))
    assert sum(size for _, size in seen) == 5 and all(seconds >= 0 for seconds, _ in seen)
    assert await storage.healthy()


async def test_the_server_runs_on_postgres(start_server, session, postgres_server):
    from tests.helpers import history, post
    from tests.sse import open_stream

    base = await start_server(storage=postgres_server.database())
    stream = await open_stream(session, base, "pg")
    for i in range(3):
        await post(session, base, "pg", f"c{i}")
    assert [c["seq"] for c in await stream.comments(3)] == [1, 2, 3]
    page = await history(session, base, "pg", limit=2)
    assert [c["seq"] for c in page["comments"]] == [3, 2]
    assert [c["seq"] for c in (await history(session, base, "pg", before=page["next"]))["comments"]] == [1]


async def test_many_opens_of_one_new_sqlite_file_race_safely(tmp_path):
    # Processes of one cluster start together on one file; switching it to WAL takes SQLite's exclusive
    # lock, so every open must wait its turn rather than fail with "database is locked".
    for round_ in range(30):
        url = f"sqlite:///{tmp_path}/shared-{round_}.db"
        stores = await asyncio.gather(*(open_storage(url) for _ in range(8)))
        try:
            added = await asyncio.gather(*(s.add(NewComment("v", "a", "x")) for s in stores))
            assert sorted(c.seq for c in added) == list(range(1, 9))
        finally:
            await asyncio.gather(*(s.close() for s in stores))
