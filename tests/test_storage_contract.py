"""One contract, every storage backend: real SQLite files and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from livecomments.model import NewComment
from livecomments.storage.base import Storage, open_storage


@pytest.fixture(params=["sqlite", "sqlite-no-group-commit", "postgres"])
async def storage(request, tmp_path) -> AsyncIterator[Storage]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_server").database()
    else:
        url = f"sqlite:///{tmp_path}/contract.db"
    store = await open_storage(url, group_commit=request.param != "sqlite-no-group-commit")
    yield store
    await store.close()


async def test_seq_is_per_video_contiguous_under_concurrency(storage):
    posts = [NewComment(f"v{i % 3}", "a", f"t{i}") for i in range(90)]
    comments = await asyncio.gather(*(storage.add(p) for p in posts))
    for v in ("v0", "v1", "v2"):
        assert sorted(c.seq for c in comments if c.video_id == v) == list(range(1, 31))
        assert await storage.last_seq(v) == 30
    assert await storage.last_seq("none") == 0


async def test_idempotency_key_returns_the_first(storage):
    first, again = await asyncio.gather(
        storage.add(NewComment("v", "a", "x"), "key"), storage.add(NewComment("v", "a", "y"), "key"))
    later = await storage.add(NewComment("v", "a", "z"), "key")
    assert first == again == later
    other_video = await storage.add(NewComment("w", "a", "x"), "key")  # keys are per video
    assert other_video.seq == 1 and other_video.video_id == "w"
    assert await storage.last_seq("v") == 1


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
