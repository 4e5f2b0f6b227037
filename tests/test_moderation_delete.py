"""Deleting a comment against real servers: who may, idempotence, history, and `event: delete`
reaching every viewer exactly once, in order with the comments, on every strategy and storage,
also when the delete's publish was lost (the head check repairs it like a comment)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import StartServer
from tests.fixtures.processes import RedisProcess, serve_args
from tests.helpers import history, post
from tests.sse import Event, SSEReader, open_stream
from tests.test_moderation import ANA, BOB, MOD, SECRET, call

# End to end on SQLite and PostgreSQL: the DynamoDB delete contract runs in test_storage_dynamodb.py.
STORAGES = ("sqlite", "postgres")

REPAIR = "0.3"  # --repair-interval for spawned realtime processes: waits below are bounded well above it


async def delete(session: aiohttp.ClientSession, base: str, seq: int, who: dict[str, str] | None,
                 video: str = "v") -> int:
    status, body, _ = await call(session, "DELETE", f"{base}/v1/videos/{video}/comments/{seq}", who)
    assert status == 204 or set(body["error"]) == {"code", "message"}, body
    return status


async def next_event(reader: SSEReader, timeout: float = 10.0) -> Event:
    """The next comment or delete event (heartbeats skipped)."""
    while True:
        ev = await reader.next(timeout)
        if ev.event in ("comment", "delete"):
            return ev


def shown(ev: Event) -> tuple[str, int, int]:
    """(event, id, seq named by the data)."""
    assert ev.id is not None
    return ev.event, int(ev.id), ev.json()["seq"]


async def test_who_may_delete_and_what_history_shows(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET)
    for who in (ANA, BOB, ANA):
        await post(session, base, "v", headers=who)
    assert await delete(session, base, 2, ANA) == 403  # someone else's
    assert await delete(session, base, 99, MOD) == 404  # no such seq
    assert await delete(session, base, 0, MOD) == 404
    assert await delete(session, base, 1, None) == 401
    assert [c["seq"] for c in (await history(session, base, "v"))["comments"]] == [3, 2, 1]  # the refusals changed nothing
    assert await delete(session, base, 1, ANA) == 204  # its own user
    assert await delete(session, base, 1, ANA) == 204  # idempotent
    assert await delete(session, base, 2, MOD) == 204  # a moderator: anyone's
    assert await delete(session, base, 4, MOD) == 404  # a delete entry is not a comment
    assert [c["seq"] for c in (await history(session, base, "v"))["comments"]] == [3]
    assert (await call(session, "GET", f"{base}/v1/videos/v"))[1]["last_seq"] == 5  # two delete entries


@pytest.mark.parametrize("strategy", ["broadcast", "partitioned", "dispatcher"])  # in-process: the memory broker
async def test_viewers_that_stay_or_resume_get_each_delete_once_in_order(
    strategy: str, start_server: StartServer, session: aiohttp.ClientSession,
) -> None:
    transport = {"registry": "memory://"} if strategy == "dispatcher" else {}
    base = await start_server(auth_jwt_secret=SECRET, strategy=strategy, **transport)
    live = await open_stream(session, base, "v")
    for text in ("one", "two", "three"):
        await post(session, base, "v", text, headers=ANA)
    assert await delete(session, base, 2, MOD) == 204
    assert await delete(session, base, 2, MOD) == 204  # nothing more to say
    await post(session, base, "v", "four", headers=ANA)
    want = [("comment", 1, 1), ("comment", 2, 2), ("comment", 3, 3), ("delete", 4, 2), ("comment", 5, 5)]
    assert [shown(await next_event(live)) for _ in want] == want
    # Resuming: the deleted comment is gone from the backlog, its delete is not.
    resumed = await open_stream(session, base, "v", last_event_id=1)
    assert [shown(await next_event(resumed)) for _ in range(3)] == [("comment", 3, 3), ("delete", 4, 2), ("comment", 5, 5)]
    after = await open_stream(session, base, "v", last_event_id=4)
    assert shown(await next_event(after)) == ("comment", 5, 5)
    # Nothing more on any of them: the next event each sees is the next comment.
    await post(session, base, "v", "six", headers=ANA)
    for reader in (live, resumed, after):
        assert shown(await next_event(reader)) == ("comment", 6, 6)


async def test_a_resume_over_deleted_comments_only_is_not_a_reset(start_server: StartServer,
                                                                  session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET, backlog_limit=2)
    for _ in range(4):
        await post(session, base, "v", headers=ANA)
    for seq in (1, 2, 3):
        assert await delete(session, base, seq, MOD) == 204
    reader = await open_stream(session, base, "v", last_event_id=0)
    got = [await next_event(reader) for _ in range(4)]
    assert [shown(ev) for ev in got] == [("comment", 4, 4), ("delete", 5, 1), ("delete", 6, 2), ("delete", 7, 3)]


@pytest.mark.parametrize("strategy", ["broadcast", "partitioned", "dispatcher"])
async def test_deletes_reach_viewers_on_every_strategy_even_when_their_publish_is_lost(
    strategy: str, storage_url: str, spawn: Any, redis_server: RedisProcess, session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    args = partial(serve_args, "--repair-interval", REPAIR, "--auth-jwt-secret", SECRET, strategy=strategy,
                   storage=storage_url)
    rt = spawn(*args(role="realtime", transport=redis_server.url))
    writer = spawn(*args(role="writer", transport=redis_server.url))
    # A writer whose publishes reach no realtime process: pub/sub on a Redis nobody listens
    # to; for the dispatcher a registry (another Redis DB) that lists nobody.
    nowhere = RedisProcess(tmp_path / "unused").url if strategy != "dispatcher" else redis_server.url[:-1] + "1"
    lossy = spawn(*args(role="writer", transport=nowhere))
    viewer = await open_stream(session, rt.url, "X")
    for text in ("one", "two"):
        await post(session, writer.url, "X", text, headers=ANA)
    # Seen before they are deleted: a comment deleted before its viewer got it is never shown (the
    # case below), and the 201 does not wait for the push, so waiting here keeps the order certain.
    assert [shown(await next_event(viewer)) for _ in range(2)] == [("comment", 1, 1), ("comment", 2, 2)]
    assert await delete(session, writer.url, 1, MOD, video="X") == 204  # published: arrives live
    assert await delete(session, lossy.url, 2, ANA, video="X") == 204  # lost: the head check brings it
    assert [shown(await next_event(viewer)) for _ in range(2)] == [("delete", 3, 1), ("delete", 4, 2)]
    # A comment and its delete both lost: the repair reads the comment's empty place and the delete.
    await post(session, lossy.url, "X", "gone unseen", headers=ANA)
    assert await delete(session, lossy.url, 5, MOD, video="X") == 204
    assert shown(await next_event(viewer)) == ("delete", 6, 5)
    await post(session, writer.url, "X", "three", headers=ANA)
    assert shown(await next_event(viewer)) == ("comment", 7, 7)  # and no delete twice
    resumed = await open_stream(session, rt.url, "X", last_event_id=0)
    assert [shown(await next_event(resumed)) for _ in range(4)] == [
        ("delete", 3, 1), ("delete", 4, 2), ("delete", 6, 5), ("comment", 7, 7)]
