"""Moderation in storage, one contract over every backend (SQLite, PostgreSQL, one and two
writers on one database): the poster's user is kept, a delete is an entry of the video's
ordered log, bans and slow mode are shared by every writer of the database."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from livecomments.backends import open_storage
from livecomments.model import NewComment
from livecomments.storage.errors import CommentDeleted, IdempotencyKeyReused, NoSuchComment, NotYourComment
from tests import test_storage_contract

storage = test_storage_contract.storage  # the same fixture: every backend, one and two writers


async def test_the_poster_is_kept_but_not_in_the_public_json(storage: Any) -> None:
    posted = await storage.add(NewComment("v", "Ana", "hi", user="u-ana"))
    anonymous = await storage.add(NewComment("v", "guest", "hello"))
    assert posted.user == "u-ana" and anonymous.user is None
    read = await storage.since("v", 0, 10)
    assert [c.user for c in read] == ["u-ana", None]
    assert "user" not in posted.to_dict() and set(posted.to_dict()) == {"video_id", "seq", "author", "text", "created_at"}


async def test_a_delete_is_the_next_entry_of_the_log(storage: Any) -> None:
    for i in range(3):
        await storage.add(NewComment("v", "Ana", f"t{i}", user="u-ana"))
    entry = await storage.delete("v", 2, by="u-mod", moderator=True)
    assert (entry.seq, entry.deletes, entry.video_id) == (4, 2, "v")
    assert await storage.last_seq("v") == 4
    after = await storage.add(NewComment("v", "Ana", "t3", user="u-ana"))
    assert after.seq == 5  # contiguous with the delete entry
    log = await storage.since("v", 0, 10)
    assert [(c.seq, c.deleted, c.deletes) for c in log] == [(1, False, 0), (2, True, 0), (3, False, 0), (4, False, 2),
                                                            (5, False, 0)]
    assert log[1].text == ""  # the deleted text is erased, not kept
    newest_first = await storage.page("v", before=None, after=None, limit=10)
    assert [c.seq for c in newest_first] == [5, 3, 1]
    assert [c.seq for c in await storage.page("v", after=0, limit=10)] == [1, 3, 5]
    assert [c.seq for c in await storage.page("v", before=5, limit=10)] == [3, 1]


async def test_deleting_twice_adds_nothing_and_only_comments_can_be_deleted(storage: Any) -> None:
    await storage.add(NewComment("v", "Ana", "t", user="u-ana"))
    assert (await storage.delete("v", 1, by="u-ana", moderator=False)).seq == 2  # its own user
    assert await storage.delete("v", 1, by="u-ana", moderator=False) is None
    assert await storage.last_seq("v") == 2
    for seq in (2, 3, 99):  # a delete entry, the next seq, far ahead
        with pytest.raises(NoSuchComment):
            await storage.delete("v", seq, by="u-mod", moderator=True)
    with pytest.raises(NoSuchComment):
        await storage.delete("other", 1, by="u-mod", moderator=True)
    assert await storage.last_seq("v") == 2 and await storage.last_seq("other") == 0


async def test_only_a_moderator_or_the_poster_may_delete(storage: Any) -> None:
    await storage.add(NewComment("v", "Ana", "t", user="u-ana"))
    await storage.add(NewComment("v", "guest", "open posting"))
    for seq in (1, 2):
        with pytest.raises(NotYourComment):
            await storage.delete("v", seq, by="u-bob", moderator=False)
    assert await storage.last_seq("v") == 2
    assert [c.deleted for c in await storage.since("v", 0, 10)] == [False, False]


async def test_a_retry_of_a_deleted_comment_is_not_a_new_comment(storage: Any) -> None:
    new = NewComment("v", "Ana", "t", user="u-ana")
    await storage.add(new, "key-1")
    await storage.delete("v", 1, by="u-mod", moderator=True)
    with pytest.raises(CommentDeleted):  # said as such, not as a key used for another comment
        await storage.add(new, "key-1")
    with pytest.raises(IdempotencyKeyReused):  # another body under that key is still a reuse
        await storage.add(NewComment("v", "Ana", "other", user="u-ana"), "key-1")
    assert await storage.last_seq("v") == 2


async def test_retention_by_count_keeps_the_newest_shown_comments(storage: Any) -> None:
    for i in range(1, 21):
        await storage.add(NewComment("v", "a", f"t{i}", user="u"), f"k{i}")
    for seq in (18, 19, 20):  # delete entries 21, 22, 23
        await storage.delete("v", seq, by="m", moderator=True)
    await storage.add(NewComment("few", "a", "one"))
    await storage.delete("few", 1, by="m", moderator=True)
    while await storage.prune(keep_comments=5, older_than=0, limit=3):  # small batches
        pass
    assert [c.seq for c in await storage.page("v", limit=10)] == [17, 16, 15, 14, 13]  # five still shown
    assert [c.seq for c in await storage.since("v", 0, 100)] == list(range(13, 24))  # their deletes stay in the log
    assert [c.seq for c in await storage.since("few", 0, 100)] == [1, 2]  # fewer than five shown: all kept
    for i in range(21, 26):  # five new comments: now the old ones and the deletes go
        await storage.add(NewComment("v", "a", f"t{i}", user="u"))
    while await storage.prune(keep_comments=5, older_than=0, limit=100):
        pass
    assert [c.seq for c in await storage.since("v", 0, 100)] == list(range(24, 29))
    assert await storage.last_seq("v") == 28


async def test_concurrent_posts_and_deletes_keep_seq_contiguous(storage: Any) -> None:
    for i in range(10):
        await storage.add(NewComment("v", "a", f"t{i}", user="u"))
    results = await asyncio.gather(
        *(storage.add(NewComment("v", "a", f"n{i}", user="u")) for i in range(20)),
        *(storage.delete("v", seq, by="m", moderator=True) for seq in range(1, 11)),
    )
    seqs = sorted(r.seq for r in results)
    assert seqs == list(range(11, 41))
    log = await storage.since("v", 0, 100)
    assert [c.seq for c in log] == list(range(1, 41))
    assert sorted(c.deletes for c in log if c.deletes) == list(range(1, 11))


async def _until(condition: Any, timeout: float = 5.0) -> None:
    """Poll an async condition until it holds: what is under test here is the storage's clock running."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


async def test_bans_are_per_video_and_expire(storage: Any) -> None:
    assert await storage.post_policy("v", "u-bob") == (None, 0)
    before = time.time()
    until = await storage.ban("v", "u-bob", 60)
    assert before + 59 < until < time.time() + 61  # the storage's clock: the same machine's here
    assert (await storage.post_policy("v", "u-bob"))[0] == pytest.approx(until)
    assert (await storage.post_policy("w", "u-bob"))[0] is None  # another video
    assert (await storage.post_policy("v", "u-ana"))[0] is None  # another user
    assert (await storage.post_policy("v", None))[0] is None  # anonymous
    assert await storage.ban("v", "u-bob", 0) is None  # lifted
    assert (await storage.post_policy("v", "u-bob"))[0] is None
    await storage.ban("v", "u-eve", 0.3)
    assert (await storage.post_policy("v", "u-eve"))[0] is not None
    await _until(lambda: _not_banned(storage, "v", "u-eve"))  # expired, with nobody lifting it


async def _not_banned(storage: Any, video: str, user: str) -> bool:
    return (await storage.post_policy(video, user))[0] is None


async def test_slow_mode_claims_one_slot_per_interval(storage: Any) -> None:
    await storage.set_slow_mode("v", 30)
    assert (await storage.post_policy("v", None))[1] == 30
    assert await storage.claim_slot("v", "u:ana", 30) == 0
    assert 29 < await storage.claim_slot("v", "u:ana", 30) <= 30
    assert await storage.claim_slot("v", "u:bob", 30) == 0  # another user
    assert await storage.claim_slot("w", "u:ana", 30) == 0  # another video
    assert await storage.claim_slot("x", "u:ana", 1) == 0
    await _until(lambda: _granted(storage, "x", "u:ana", 1))  # the interval passed
    await storage.set_slow_mode("v", 0)
    assert (await storage.post_policy("v", None))[1] == 0


async def _granted(storage: Any, video: str, poster: str, interval: int) -> bool:
    return await storage.claim_slot(video, poster, interval) == 0


async def test_the_retry_of_the_post_that_took_the_slot_takes_it_again(storage: Any) -> None:
    assert await storage.claim_slot("v", "u:ana", 30, "k1") == 0
    assert await storage.claim_slot("v", "u:ana", 30, "k1") == 0  # its retry
    assert 29 < await storage.claim_slot("v", "u:ana", 30, "k2") <= 30  # a new post
    assert 29 < await storage.claim_slot("v", "u:ana", 30) <= 30  # a post without a key


async def test_housekeeping_forgets_only_what_ended(storage: Any) -> None:
    await storage.ban("v", "u-bob", 60)
    await storage.ban("v", "u-eve", 0.2)
    await storage.claim_slot("v", "u:ana", 30)
    await _until(lambda: _not_banned(storage, "v", "u-eve"))
    await storage.forget_expired()
    assert (await storage.post_policy("v", "u-bob"))[0] is not None  # not ended: kept
    assert await storage.claim_slot("v", "u:ana", 30) > 0
    for store in getattr(storage, "stores", (storage,))[:1]:
        assert await _ban_rows(store) == 1  # the ended ban is gone from the table


async def _ban_rows(store: Any) -> int:
    """How many ban rows the database holds (what forgetting removes, invisible through the protocol)."""
    if hasattr(store, "_pool"):
        return int(await store._pool.fetchval("SELECT count(*) FROM bans"))
    with sqlite3.connect(store._path) as conn:
        return int(conn.execute("SELECT count(*) FROM bans").fetchone()[0])


async def test_concurrent_claims_grant_one(storage: Any) -> None:
    waits = await asyncio.gather(*(storage.claim_slot("v", "u:ana", 30) for _ in range(8)))
    assert sorted(waits)[0] == 0 and all(w > 0 for w in sorted(waits)[1:])


async def test_a_database_from_before_moderation_is_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE comments (video_id TEXT NOT NULL, seq INTEGER NOT NULL, author TEXT NOT NULL,
            text TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (video_id, seq)) WITHOUT ROWID;
        INSERT INTO comments VALUES ('v', 1, 'ana', 'from before', 1.0);
    """)
    conn.close()
    store = await open_storage(f"sqlite:///{db}")
    try:
        [old] = await store.since("v", 0, 10)
        assert (old.text, old.user, old.deleted, old.deletes) == ("from before", None, False, 0)
        assert (await store.delete("v", 1, by="m", moderator=True)).seq == 2
        assert await store.page("v", limit=10) == []
    finally:
        await store.close()


async def _post_as(storage: Any, user: str | None, *videos: str) -> None:
    for video in videos:
        await storage.add(NewComment(video, user or "guest", f"{user} on {video}", user=user))


async def test_erasing_a_user_deletes_each_comment_on_every_video_as_a_delete_would(storage: Any) -> None:
    await _post_as(storage, "u-ana", "v1", "v2")
    await _post_as(storage, "u-bob", "v1", "v2")
    await _post_as(storage, "u-ana", "v1", "v3")
    await _post_as(storage, None, "v1")
    entries, done = await storage.erase_user("u-ana", by="u-mod", limit=10)
    assert done
    assert sorted((e.video_id, e.seq, e.deletes, e.user) for e in entries) == [
        ("v1", 5, 1, "u-mod"), ("v1", 6, 3, "u-mod"), ("v2", 3, 1, "u-mod"), ("v3", 2, 1, "u-mod")]
    # Each video's entries come in its seq order: the order they are published in.
    assert [e.seq for e in entries if e.video_id == "v1"] == [5, 6]
    assert await storage.last_seqs(["v1", "v2", "v3"]) == {"v1": 6, "v2": 3, "v3": 2}
    log = await storage.since("v1", 0, 10)
    assert [(c.seq, c.deleted, c.deletes, c.text) for c in log] == [
        (1, True, 0, ""), (2, False, 0, "u-bob on v1"), (3, True, 0, ""), (4, False, 0, "None on v1"),
        (5, False, 1, ""), (6, False, 3, "")]
    assert [c.user for c in await storage.page("v1", limit=10)] == [None, "u-bob"]  # other users untouched
    assert [c.user for c in await storage.page("v2", limit=10)] == ["u-bob"]
    assert await storage.page("v3", limit=10) == []
    after = await storage.add(NewComment("v1", "Ana", "back", user="u-ana"))
    assert after.seq == 7  # the log goes on after the delete entries


async def test_erasing_is_bounded_per_call_and_the_next_call_goes_on(storage: Any) -> None:
    await _post_as(storage, "u-ana", "v1", "v2", "v1", "v2", "v3")
    await _post_as(storage, "u-bob", "v1")
    calls = []
    for _ in range(4):
        entries, done = await storage.erase_user("u-ana", by="u-mod", limit=2)
        calls.append((len(entries), done))
    assert calls == [(2, False), (2, False), (1, True), (0, True)]  # after done: nothing more to delete
    assert {c.user for v in ("v1", "v2", "v3") for c in await storage.page(v, limit=10)} == {"u-bob"}
    assert await storage.last_seqs(["v1", "v2", "v3"]) == {"v1": 5, "v2": 4, "v3": 2}
    await _post_as(storage, "u-ana", "v1", "v1")
    assert [(len(e), d) for e, d in [await storage.erase_user("u-ana", by="u-mod", limit=2)]] == [(2, True)]


async def test_erasing_skips_what_is_deleted_already_and_keeps_the_users_own_deletes(storage: Any) -> None:
    await _post_as(storage, "u-ana", "v", "v")
    await _post_as(storage, "u-bob", "v")
    assert (await storage.delete("v", 1, by="u-ana", moderator=False)).seq == 4  # her own delete
    assert (await storage.delete("v", 3, by="u-ana", moderator=True)).seq == 5  # as a moderator: an entry by her
    entries, done = await storage.erase_user("u-ana", by="u-mod", limit=10)
    assert done and [(e.seq, e.deletes) for e in entries] == [(6, 2)]
    log = await storage.since("v", 0, 10)
    assert [(c.seq, c.deleted, c.deletes) for c in log] == [
        (1, True, 0), (2, True, 0), (3, True, 0), (4, False, 1), (5, False, 3), (6, False, 2)]
    assert await storage.erase_user("u-ana", by="u-mod", limit=10) == ([], True)
    assert await storage.erase_user("u-nobody", by="u-mod", limit=10) == ([], True)
    assert await storage.last_seq("v") == 6


async def test_concurrent_erases_delete_each_comment_once(storage: Any) -> None:
    store = storage.stores[0] if isinstance(storage, test_storage_contract.TwoWriters) else storage
    if type(store).__name__ == "DynamoStorage":  # DynamoDB makes each conditional write atomic; the tests' moto
        pytest.skip("does not: a thread per request checks the condition, then applies it, with no lock between")
    await asyncio.gather(*(storage.add(NewComment(f"v{i % 3}", "Ana", f"t{i}", user="u-ana")) for i in range(12)))
    results = await asyncio.gather(*(storage.erase_user("u-ana", by="u-mod", limit=5) for _ in range(3)))
    while not all(done for _, done in results):
        results = [await storage.erase_user("u-ana", by="u-mod", limit=5)]
    for video in ("v0", "v1", "v2"):
        log = await storage.since(video, 0, 20)
        assert [c.seq for c in log] == list(range(1, 9))  # contiguous: 4 comments, 4 delete entries
        assert sorted(c.deletes for c in log if c.deletes) == [1, 2, 3, 4]  # each comment deleted once


async def test_an_existing_sqlite_database_gets_the_user_index(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/before.db"
    store = await open_storage(url)
    await _post_as(store, "u-ana", "v", "w")
    await store.close()
    conn = sqlite3.connect(tmp_path / "before.db")
    conn.execute("DROP INDEX comments_by_user")  # as a database made before erase_user has it
    conn.close()
    store = await open_storage(url)
    try:
        entries, done = await store.erase_user("u-ana", by="m", limit=10)
        assert done and sorted((e.video_id, e.deletes) for e in entries) == [("v", 1), ("w", 1)]
    finally:
        await store.close()


async def test_an_existing_user_index_is_remade_without_anonymous_posts(tmp_path: Path) -> None:
    """A database whose comments_by_user also took anonymous posts gets the narrower index on
    open, and erasing a user still reads through it."""
    url = f"sqlite:///{tmp_path}/before.db"
    store = await open_storage(url)
    await _post_as(store, "u-ana", "v")
    await store.add(NewComment("v", "Anon", "open posting"))
    await store.close()
    conn = sqlite3.connect(tmp_path / "before.db")
    conn.execute("DROP INDEX comments_by_user")
    conn.execute("CREATE INDEX comments_by_user ON comments (user_id, video_id, seq) WHERE deletes IS NULL AND deleted = 0")
    conn.close()
    store = await open_storage(url)
    try:
        entries, done = await store.erase_user("u-ana", by="m", limit=10)
        assert done and [(e.video_id, e.deletes) for e in entries] == [("v", 1)]
        assert [c.author for c in await store.page("v")] == ["Anon"]
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "before.db")
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name='comments_by_user'").fetchone()[0]
    conn.close()
    assert "user_id IS NOT NULL" in sql
