"""Finding and erasing a user against real servers: a moderator's history names each comment's
user (and is never cached for anyone else), anyone else's does not; DELETE /v1/users/{sub}/comments
deletes the user's comments on every video as single deletes do (open streams get `event: delete`,
resumes see it, history loses them), a bounded number per call, and refusals change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from livecomments.backends import open_storage
from livecomments.edge import moderation
from livecomments.model import NewComment
from livecomments.tokens import MAX_SUB
from tests.conftest import StartServer
from tests.fixtures.processes import LivecommentsProcess, serve_args, sqlite_url
from tests.helpers import post
from tests.sse import SSEReader, open_stream
from tests.test_moderation import ANA, BOB, MOD, SECRET, call, token
from tests.test_moderation_delete import next_event, shown


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One spawned `livecomments serve` (writer and realtime) for the module: each test has its own
    videos and users, so they do not see each other's comments."""
    tmp = tmp_path_factory.mktemp("erase")
    proc = LivecommentsProcess(
        serve_args("--auth-jwt-secret", SECRET, "--port", "0", storage=sqlite_url(tmp / "lc.db")), tmp / "lc.log",
    ).start()
    yield proc.url
    proc.stop()


async def erase(session: aiohttp.ClientSession, base: str, sub: str, who: dict[str, str] | None) -> tuple[int, Any, Any]:
    return await call(session, "DELETE", f"{base}/v1/users/{sub}/comments", who)


async def page(session: aiohttp.ClientSession, base: str, video: str, who: dict[str, str] | None = None,
               ) -> tuple[list[dict[str, Any]], Any]:
    status, body, headers = await call(session, "GET", f"{base}/v1/videos/{video}/comments", who)
    assert status == 200, body
    return body["comments"], headers


async def test_only_a_moderators_history_names_the_users_and_it_is_never_cached(
    server: str, session: aiohttp.ClientSession,
) -> None:
    await post(session, server, "h1", "first", headers=ANA)
    await post(session, server, "h1", "second", headers=BOB)
    shown_to_mod, headers = await page(session, server, "h1", MOD)
    assert [(c["text"], c["user"]) for c in shown_to_mod] == [("second", "bob"), ("first", "ana")]
    assert {d.strip() for d in headers["Cache-Control"].split(",")} >= {"private", "no-store"}
    assert "Authorization" in headers["Vary"]
    bad = {"Authorization": "Bearer not-a-token"}
    for who in (None, ANA, bad):  # anonymous, a user's token, a token that does not verify: public pages
        comments, headers = await page(session, server, "h1", who)
        assert [c["text"] for c in comments] == ["second", "first"]
        assert all("user" not in c for c in comments), comments
        assert "no-store" not in headers.get("Cache-Control", "")
        assert "Authorization" in headers["Vary"]  # a cache keeps the public page apart from a moderator's


async def test_refused_erases_change_nothing(server: str, session: aiohttp.ClientSession) -> None:
    await post(session, server, "r1", "kept", headers=token("rita"))
    cases = [
        (None, "rita", 401, "unauthorized"),
        (token("rita"), "rita", 403, "forbidden"),  # not even one's own comments: a moderator's tool
        (ANA, "rita", 403, "forbidden"),
        (MOD, "x" * (MAX_SUB + 1), 400, "invalid_user"),  # no token names such a user
    ]
    for who, sub, status, code in cases:
        got, body, _ = await erase(session, server, sub, who)
        assert (got, body["error"]["code"]) == (status, code), body
        assert set(body["error"]) == {"code", "message"}
    comments, _ = await page(session, server, "r1")
    assert [c["text"] for c in comments] == ["kept"]
    assert (await call(session, "GET", f"{server}/v1/videos/r1"))[1]["last_seq"] == 1  # no delete entry either


async def test_erasing_a_user_reaches_open_streams_resumes_and_history(
    server: str, session: aiohttp.ClientSession,
) -> None:
    erin = token("erin")
    viewers = {video: await open_stream(session, server, video) for video in ("e1", "e2")}
    await post(session, server, "e1", "one", headers=erin)
    await post(session, server, "e1", "two", headers=BOB)
    await post(session, server, "e1", "three", headers=erin)
    await post(session, server, "e2", "four", headers=erin)
    assert [shown(await next_event(viewers["e1"])) for _ in range(3)] == [("comment", s, s) for s in (1, 2, 3)]
    assert shown(await next_event(viewers["e2"])) == ("comment", 1, 1)
    status, body, headers = await erase(session, server, "erin", MOD)
    assert (status, body) == (200, {"user": "erin", "deleted": 3, "done": True})
    assert "no-store" in headers["Cache-Control"]
    # Each open stream gets each delete once, in order with the comments, as a single delete sends it.
    e1 = [await next_event(viewers["e1"]) for _ in range(2)]
    assert [shown(ev) for ev in e1] == [("delete", 4, 1), ("delete", 5, 3)]
    assert e1[0].json() == {"video_id": "e1", "seq": 1}  # the public shape: no user on a stream
    assert shown(await next_event(viewers["e2"])) == ("delete", 2, 1)
    assert [c["text"] for c in (await page(session, server, "e1", MOD))[0]] == ["two"]
    assert (await page(session, server, "e2"))[0] == []
    resumed = await open_stream(session, server, "e1", last_event_id=0)
    assert [shown(await next_event(resumed)) for _ in range(3)] == [("comment", 2, 2), ("delete", 4, 1), ("delete", 5, 3)]
    # Again: nothing left, nothing sent; the streams' next event is the next comment.
    assert (await erase(session, server, "erin", MOD))[:2] == (200, {"user": "erin", "deleted": 0, "done": True})
    await post(session, server, "e1", "five", headers=BOB)
    assert shown(await next_event(viewers["e1"])) == ("comment", 6, 6)


@pytest.mark.parametrize("strategy", ["broadcast", "partitioned", "dispatcher"])  # in-process: the memory broker
async def test_a_large_erase_goes_in_bounded_calls_on_every_strategy(
    strategy: str, start_server: StartServer, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(moderation, "ERASE_BATCH", 2)  # read per call: 2 stands for 500 here
    transport = {"registry": "memory://"} if strategy == "dispatcher" else {}
    base = await start_server(auth_jwt_secret=SECRET, strategy=strategy, **transport)
    viewers: dict[str, SSEReader] = {v: await open_stream(session, base, v) for v in ("b1", "b2")}
    for video in ("b1", "b2", "b1"):
        await post(session, base, video, headers=ANA)
    calls = [(await erase(session, base, "ana", MOD))[1] for _ in range(3)]
    assert [(c["deleted"], c["done"]) for c in calls] == [(2, False), (1, True), (0, True)]
    b1 = [shown(await next_event(viewers["b1"])) for _ in range(4)]
    assert b1 == [("comment", 1, 1), ("comment", 2, 2), ("delete", 3, 1), ("delete", 4, 2)]
    assert [shown(await next_event(viewers["b2"])) for _ in range(2)] == [("comment", 1, 1), ("delete", 2, 1)]
    assert (await page(session, base, "b1"))[0] == [] and (await page(session, base, "b2"))[0] == []


async def test_a_dynamodb_table_set_from_before_the_user_index_is_upgraded(dynamodb_server: Any) -> None:
    """Tables made before erase_user get the index, and the comments already there get into it."""
    url = dynamodb_server.url()
    store = await open_storage(url)
    try:
        for video, user in (("u1", "ana"), ("u2", "ana"), ("u1", "bob"), ("u1", "ana")):
            await store.add(NewComment(video, user, "old", user=user))
        await store.delete("u1", 3, by="ana", moderator=False)  # deleted before the upgrade: stays deleted
        # Back to the layout of before: no index, no `live_user` on the comments, no backfill marker.
        client, tables = store._client, store._t
        await client.update_table(TableName=tables["comments"],
                                  GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "live_by_user"}}])
        for video, seq in (("u1", 1), ("u2", 1), ("u1", 2)):
            await client.update_item(TableName=tables["comments"], Key={"video_id": {"S": video}, "seq": {"N": str(seq)}},
                                     UpdateExpression="REMOVE live_user")
        await client.delete_item(TableName=tables["meta"], Key={"name": {"S": "live_user_index"}})
        described = (await client.describe_table(TableName=tables["comments"]))["Table"]
        assert not described.get("GlobalSecondaryIndexes")
    finally:
        await store.close()
    store = await open_storage(url)
    try:
        entries, done = await store.erase_user("ana", by="mod", limit=10)
        assert done and sorted((e.video_id, e.deletes) for e in entries) == [("u1", 1), ("u2", 1)]
        assert [c.user for c in await store.page("u1", limit=10)] == ["bob"]
    finally:
        await store.close()
