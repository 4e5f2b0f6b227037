"""Retention end to end: old comments go in the background; seq goes on; a resume from a
removed seq is told so in band (`event: reset` with the oldest kept seq), never a silent gap."""

from __future__ import annotations

import asyncio

import aiohttp

from livecomments.tokens import mint
from tests.helpers import history, post
from tests.sse import open_stream

# End to end on SQLite and PostgreSQL: the DynamoDB retention contract runs in test_storage_dynamodb.py.
STORAGES = ("sqlite", "postgres")


async def _until_kept(session: aiohttp.ClientSession, base: str, video: str, want: list[int]) -> None:
    async with asyncio.timeout(10):  # retention runs every retention_interval in the server
        while [c["seq"] for c in (await history(session, base, video))["comments"]] != want:
            await asyncio.sleep(0.05)


async def test_retention_by_count_keeps_the_newest_shown_comments_after_deletes(start_server, session, storage_url):
    # Deletes add entries to the log; retention counts the comments still shown, not the entries.
    secret = "a-test-secret-of-at-least-32-bytes!"
    ana = {"Authorization": "Bearer " + mint(secret, "HS256", sub="ana", name="Ana")}
    mod = {"Authorization": "Bearer " + mint(secret, "HS256", sub="mod", name="Mod", moderator=True)}
    base = await start_server(storage=storage_url, auth_jwt_secret=secret, retention_comments=5,
                              retention_interval=0.05)
    for i in range(1, 21):
        await post(session, base, "d", f"c{i}", headers=ana)
    await _until_kept(session, base, "d", [20, 19, 18, 17, 16])
    for seq in (18, 19, 20):  # delete entries 21, 22, 23
        async with session.delete(f"{base}/v1/videos/d/comments/{seq}", headers=mod) as r:
            assert r.status == 204
    for i in range(1, 7):  # a witness: when its oldest goes, a sweep ran after the deletes
        await post(session, base, "w", f"w{i}", headers=ana)
    await _until_kept(session, base, "w", [6, 5, 4, 3, 2])
    assert [c["seq"] for c in (await history(session, base, "d"))["comments"]] == [17, 16]  # were removed before
    stream = await open_stream(session, base, "d", last_event_id=15)
    assert [c["seq"] for c in await stream.comments(2)] == [16, 17]  # no reset: 16 and on are all kept


async def test_retention_by_count_then_resume_from_a_removed_seq(start_server, session, storage_url):
    base = await start_server(storage=storage_url, retention_comments=3, retention_interval=0.05)
    for i in range(10):
        await post(session, base, "r", f"c{i}")
    await _until_kept(session, base, "r", [10, 9, 8])
    stream = await open_stream(session, base, "r", last_event_id=2)
    reset = await stream.next()
    assert (reset.event, reset.json()) == ("reset", {"oldest_seq": 8})
    assert [c["seq"] for c in await stream.comments(3)] == [8, 9, 10]
    assert (await post(session, base, "r", "next"))["seq"] == 11  # the head outlived what was removed
    assert (await stream.next_comment())["seq"] == 11


async def test_retention_by_age_keeps_the_head(start_server, session, storage_url):
    # retention_days is a float: 1e-5 days is under a second.
    base = await start_server(storage=storage_url, retention_days=1e-5, retention_interval=0.05)
    for i in range(3):
        await post(session, base, "old", f"c{i}")
    await _until_kept(session, base, "old", [])
    assert (await post(session, base, "old", "new"))["seq"] == 4  # never restarts at 1


async def test_resume_after_every_comment_aged_out_is_told_so(start_server, session, storage_url):
    base = await start_server(storage=storage_url, retention_days=1e-5, retention_interval=0.05)
    for i in range(3):
        await post(session, base, "gone", f"c{i}")
    await _until_kept(session, base, "gone", [])
    stream = await open_stream(session, base, "gone", last_event_id=1)
    reset = await stream.next()
    assert (reset.event, reset.json()) == ("reset", {"oldest_seq": 4})
    assert (await post(session, base, "gone", "new"))["seq"] == 4
    assert (await stream.next_comment())["seq"] == 4
