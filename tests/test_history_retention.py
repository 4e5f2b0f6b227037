"""Retention end to end: old comments go in the background; seq goes on; a resume from a
removed seq is told so in band (`event: reset` with the oldest kept seq), never a silent gap."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.helpers import history, post
from tests.sse import open_stream


async def _until_kept(session: aiohttp.ClientSession, base: str, video: str, want: list[int]) -> None:
    async with asyncio.timeout(10):  # retention runs every retention_interval in the server
        while [c["seq"] for c in (await history(session, base, video))["comments"]] != want:
            await asyncio.sleep(0.05)



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
