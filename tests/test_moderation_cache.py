"""Each writer caches bans and slow mode (storage/moderation_cache.py); what another writer of the
same store decides takes effect within FRESH_FOR (1 s) of its commit, on SQLite, PostgreSQL and
DynamoDB: two real writer processes, one store, driven over HTTP. A test posts until the change
shows, under a deadline, and asserts that no post started past the bound got through."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from livecomments.backends import open_storage
from livecomments.model import NewComment
from livecomments.storage.moderation_cache import FRESH_FOR, Policy, PolicyCache
from livecomments.storage.sqlite import SqliteStorage
from livecomments.tokens import mint
from tests.helpers import post, post_reply

SECRET = "a-test-secret-of-at-least-32-bytes!"
DEADLINE = FRESH_FOR + 30  # a hang, not a busy machine


def token(sub: str, *, moderator: bool = False) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint(SECRET, "HS256", sub=sub, name=sub.title(), moderator=moderator)}


BOB, MOD = token("bob"), token("mod", moderator=True)


@pytest.fixture
def writers(spawn, storage_url: str) -> tuple[str, str]:
    """Two writer processes on one store; a post to one fills its cache, a ban on the other
    is what the first must learn."""
    env = {"LIVECOMMENTS_AUTH_JWT_SECRET": SECRET}
    a, b = (spawn("--role", "both", "--storage", storage_url, "--log-level", "warning", env=env) for _ in range(2))
    return a.url, b.url


async def moderate(session: aiohttp.ClientSession, method: str, url: str, body: dict[str, object]) -> float:
    """A ban or a setting as the moderator; returns when it was answered (so committed)."""
    async with session.request(method, url, json=body, headers=MOD) as r:
        assert r.status in (200, 201, 204), await r.text()
    return time.monotonic()


async def until_refused(session: aiohttp.ClientSession, base: str, changed_at: float, want: tuple[int, str],
                        accepted_past_bound: int = 0) -> None:
    """Post as bob to `base` until refused with `want`; of the posts started FRESH_FOR after
    `changed_at` or later, at most `accepted_past_bound` may be accepted."""
    late = 0
    async with asyncio.timeout(DEADLINE):
        while True:
            started = time.monotonic()
            reply = await post_reply(session, base, "v", headers=BOB)
            if reply.status != 201:
                assert (reply.status, reply.body["error"]["code"]) == want, reply.body
                return
            late += started >= changed_at + FRESH_FOR
            assert late <= accepted_past_bound, f"accepted {late} posts more than {FRESH_FOR} s after the change"


async def test_a_ban_on_one_writer_refuses_on_the_other_within_the_bound_and_an_unban_at_once(
        writers: tuple[str, str], session: aiohttp.ClientSession) -> None:
    a, b = writers
    for _ in range(3):
        await post(session, b, "v", headers=BOB)  # b knows bob as not banned (cached)
    banned_at = await moderate(session, "POST", f"{a}/v1/videos/v/bans", {"user": "bob", "ttl_s": 600})
    await post(session, a, "v", headers=BOB, expect=403)  # the writer that banned: at once
    await until_refused(session, b, banned_at, (403, "banned"))
    await post(session, b, "v", headers=BOB, expect=403)  # a ban is never served from a stale cache
    await moderate(session, "POST", f"{a}/v1/videos/v/bans", {"user": "bob", "ttl_s": 0})
    await post(session, b, "v", headers=BOB)  # lifted: at once on the other writer too


async def test_slow_mode_set_on_one_writer_holds_on_the_other_within_the_bound_and_lifts_at_once(
        writers: tuple[str, str], session: aiohttp.ClientSession) -> None:
    a, b = writers
    await post(session, b, "v", headers=BOB)  # b knows v without slow mode (cached)
    set_at = await moderate(session, "PUT", f"{a}/v1/videos/v/settings", {"slow_mode_s": 60})
    # Past the bound, b claims bob's slot in storage: one post, then refusals.
    await until_refused(session, b, set_at, (429, "slow_mode"), accepted_past_bound=1)
    await moderate(session, "PUT", f"{a}/v1/videos/v/settings", {"slow_mode_s": 0})
    await post(session, b, "v", headers=BOB)  # b's cached 60 s is checked against storage before refusing


async def test_every_ban_unban_and_setting_raises_the_generation(storage_url: str) -> None:
    storage = await open_storage(storage_url)
    try:
        seen = [await storage.moderation_generation()]
        for change in (storage.ban("v", "bob", 60), storage.ban("v", "bob", 0), storage.set_slow_mode("v", 5),
                       storage.set_slow_mode("w", 0)):
            await change
            seen.append(await storage.moderation_generation())
            assert seen[-1] > seen[-2], seen
        comment = await storage.add(NewComment("v", "Ana", "hi", "ana"))  # what is not a policy leaves it
        await storage.claim_slot("v", "u:ana", 5)
        await storage.delete("v", comment.seq, by="mod", moderator=True)
        assert await storage.moderation_generation() == seen[-1]
    finally:
        await storage.close()


async def ask(cache: PolicyCache, video_id: str, user: str) -> Policy:
    """What a post asks (edge/moderation.check_post): the cache, else storage."""
    slow_mode_s = cache.cached(video_id, user)
    return Policy(None, slow_mode_s, True) if slow_mode_s is not None else await cache.read(video_id, user)


async def test_the_cache_answers_only_while_its_generation_reads_are_fresh(tmp_path: Path) -> None:
    """In one process, two storages on one SQLite file as two writers: b's cache answers from memory
    until a generation read sees a's ban; without successful reads it stops answering after FRESH_FOR."""
    a = await SqliteStorage.open(str(tmp_path / "m.db"))
    b = await SqliteStorage.open(str(tmp_path / "m.db"))
    try:
        cache = PolicyCache(b)
        assert not (await ask(cache, "v", "bob")).cached  # never read the generation: not fresh
        await cache.poll()
        await ask(cache, "v", "bob")
        assert await ask(cache, "v", "bob") == (None, 0, True)
        await a.ban("v", "bob", 600)
        await cache.poll()  # the generation moved: dropped
        found = await ask(cache, "v", "bob")
        assert found.banned_until is not None and not found.cached
        await a.ban("v", "bob", 0)
        assert await ask(cache, "v", "bob") == (None, 0, False)  # bans are never cached
        assert (await ask(cache, "v", "bob")).cached
        await a.ban("v", "bob", 600)  # and no generation read succeeds from now on
        async with asyncio.timeout(FRESH_FOR + 10):
            while (await ask(cache, "v", "bob")).banned_until is None:
                await asyncio.sleep(0.02)
    finally:
        await a.close()
        await b.close()


async def test_a_read_that_raced_a_drop_is_not_kept(tmp_path: Path) -> None:
    storage = await SqliteStorage.open(str(tmp_path / "m.db"))
    try:
        cache = PolicyCache(storage)
        await cache.poll()
        reading = asyncio.ensure_future(ask(cache, "v", "bob"))
        await asyncio.sleep(0)  # the read is under way (on the reader thread)
        cache.drop()  # as if a ban landed meanwhile
        assert not (await reading).cached
        assert not (await ask(cache, "v", "bob")).cached  # the raced read was not kept
        assert (await ask(cache, "v", "bob")).cached
    finally:
        await storage.close()
