"""The WebSocket stream against a real server: events, resume seam, reset, posts over the socket."""

from __future__ import annotations

import asyncio
import sqlite3

import aiohttp

from livecomments.tokens import mint
from tests.fixtures.processes import sqlite_url
from tests.helpers import all_seqs, history, post
from tests.sse import open_stream
from tests.ws import open_ws

SECRET = "a-test-secret-of-at-least-32-bytes!"


def token(sub: str, *, moderator: bool = False) -> str:
    return mint(SECRET, "HS256", sub=sub, name=sub.title(), moderator=moderator)


async def test_comments_arrive_in_order_as_typed_json(start_server, session):
    base = await start_server()
    ws = await open_ws(session, base, "abc")
    assert ws.opening == [] and ws.greeting == {"type": "viewers", "video_id": "abc", "viewers": 1}
    sent = [await post(session, base, "abc", f"c{i}") for i in range(20)]
    got = await ws.comments(20)
    assert got == [{"type": "comment", **c} for c in sent]


async def test_resume_with_since_has_no_gap_and_no_duplicate_at_the_seam(start_server, session):
    base = await start_server(backlog_limit=7)  # several catch-up pages
    for i in range(30):
        await post(session, base, "r", f"{i}")
    # Posts keep arriving while the resuming socket catches up: they are held, then joined on.
    posting = asyncio.gather(*(post(session, base, "r", f"live{i}") for i in range(20)))
    ws = await open_ws(session, base, "r", since=4)
    await posting
    seen = [m["seq"] for m in ws.opening if m["type"] == "comment"]
    seen += [m["seq"] for m in await ws.comments(50 - 4 - len(seen))]
    assert seen == list(range(5, 51))
    await post(session, base, "r", "after")
    assert (await ws.next_of("comment"))["seq"] == 51


async def test_resume_point_older_than_storage_says_reset(start_server, session, tmp_path):
    db = tmp_path / "pruned.db"
    base = await start_server(storage=sqlite_url(db))
    for i in range(10):
        await post(session, base, "old", f"{i}")
    with sqlite3.connect(db) as conn:  # retention pruned the first five
        conn.execute("DELETE FROM comments WHERE video_id='old' AND seq <= 5")
    ws = await open_ws(session, base, "old", since=2)
    assert ws.opening[0] == {"type": "reset", "oldest_seq": 6}
    assert [m["seq"] for m in ws.opening[1:]] == [6, 7, 8, 9, 10]


async def test_resume_point_from_the_future_resets_to_now(start_server, session):
    base = await start_server()
    await post(session, base, "f", "one")
    ws = await open_ws(session, base, "f", since=500)
    assert ws.opening == [{"type": "reset", "oldest_seq": 2}]


async def test_delete_and_viewer_count_events(start_server, session):
    base = await start_server(auth_jwt_secret=SECRET, viewers_interval=0.1)
    ws = await open_ws(session, base, "d")
    other = await open_ws(session, base, "d")  # the first socket hears the count change
    assert other.greeting["viewers"] == 2
    assert (await ws.next_of("viewers"))["viewers"] == 2
    bearer = {"Authorization": "Bearer " + token("mod", moderator=True)}
    first = await post(session, base, "d", "oops", headers=bearer)
    async with session.delete(f"{base}/v1/videos/d/comments/{first['seq']}", headers=bearer) as r:
        assert r.status == 204
    assert (await ws.next_of("comment"))["seq"] == 1
    delete = await ws.next_of("delete")
    assert (delete["seq"], delete["deletes"], delete["video_id"]) == (2, 1, "d")
    resumed = await open_ws(session, base, "d", since=0)  # a resume replays the delete in order
    assert [(m["type"], m["seq"]) for m in resumed.opening] == [("delete", 2)]  # the deleted comment's place is silent


async def test_post_over_the_socket_acks_with_seq_and_reaches_sse_and_ws_viewers(start_server, session):
    base = await start_server()
    sse = await open_stream(session, base, "p")
    watcher = await open_ws(session, base, "p")
    poster = await open_ws(session, base, "p")
    ack = await poster.post("hello", id="8c0f-1")
    assert ack == {"type": "ack", "id": "8c0f-1", "seq": 1}
    assert (await sse.next_comment())["text"] == "hello"
    seen = await watcher.next_of("comment")
    assert (seen["seq"], seen["text"], seen["author"]) == (1, "hello", "ana")
    assert (await poster.next_of("comment"))["seq"] == 1  # the poster's own socket too


async def test_post_errors_name_the_id_and_store_nothing(start_server, session):
    base = await start_server(max_text=10)
    ws = await open_ws(session, base, "e")
    too_long = await ws.post("x" * 11, id="a1")
    assert too_long["type"] == "error" and too_long["error"]["code"] == "text_too_long"
    await ws.send({"type": "post", "text": "hi", "author": "ana"})  # no id
    assert (await ws.next_of("error"))["error"]["code"] == "invalid_id"
    await ws.send({"type": "post", "text": "hi", "author": "ana", "id": "\n"})
    assert (await ws.next_of("error"))["error"]["code"] == "invalid_idempotency_key"
    await ws.ws.send_str("{not json")
    assert (await ws.next_of("error"))["error"]["code"] == "invalid_json"
    await ws.send({"type": "shout"})
    assert (await ws.next_of("error"))["error"]["code"] == "invalid_message"
    assert (await history(session, base, "e"))["comments"] == []


async def test_idempotent_retry_returns_the_same_seq_across_reconnects(start_server, session):
    base = await start_server()
    ws = await open_ws(session, base, "i")
    first = await ws.post("once", id="k-1")
    await ws.ws.close()
    again = await open_ws(session, base, "i")
    assert await again.post("once", id="k-1") == first
    reused = await again.post("other text", id="k-1")
    assert reused["error"]["code"] == "idempotency_key_reused"
    assert await all_seqs(session, base, "i") == [1]


async def test_rate_limit_applies_to_socket_posts(start_server, session):
    base = await start_server(rate_limit_per_s=0.01, rate_limit_burst=2)
    ws = await open_ws(session, base, "rl")
    assert (await ws.post("1", id="1"))["type"] == "ack"
    assert (await ws.post("2", id="2"))["type"] == "ack"
    limited = await ws.post("3", id="3")
    assert limited["error"]["code"] == "rate_limited" and limited["id"] == "3"
    # The same bucket as the POST: the client's address.
    async with session.post(f"{base}/v1/videos/rl/comments", json={"text": "4", "author": "a"}) as r:
        assert r.status == 429


async def test_identity_from_the_upgrade_or_an_auth_message(start_server, session):
    base = await start_server(auth_jwt_secret=SECRET)
    anonymous = await open_ws(session, base, "a")
    refused = await anonymous.post("hi", id="n1")
    assert refused["error"]["code"] == "unauthorized"
    await anonymous.send({"type": "auth", "token": "not-a-token"})
    assert (await anonymous.next_of("error"))["error"]["code"] == "unauthorized"
    await anonymous.send({"type": "auth", "token": token("bob")})
    ack = await anonymous.post("now me", id="n2", author="someone else")
    assert ack["type"] == "ack"
    upgraded = await open_ws(session, base, "a", access_token=token("ana"))
    assert (await upgraded.post("by token", id="n3"))["type"] == "ack"
    stored = (await history(session, base, "a"))["comments"]
    assert [(c["author"], c["text"]) for c in stored] == [("Ana", "by token"), ("Bob", "now me")]  # the token names it
    async with session.get(f"{base}/v1/videos/a/ws", params={"access_token": "bad"},
                           headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                    "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"


async def test_slow_mode_and_bans_apply_to_socket_posts(start_server, session):
    base = await start_server(auth_jwt_secret=SECRET)
    mod = {"Authorization": "Bearer " + token("mod", moderator=True)}
    async with session.put(f"{base}/v1/videos/s/settings", json={"slow_mode_s": 60}, headers=mod) as r:
        assert r.status == 200
    async with session.post(f"{base}/v1/videos/s/bans", json={"user": "bad", "ttl_s": 60}, headers=mod) as r:
        assert r.status == 201
    ws = await open_ws(session, base, "s", access_token=token("ana"))
    assert (await ws.post("one", id="s1"))["type"] == "ack"
    assert (await ws.post("two", id="s2"))["error"]["code"] == "slow_mode"
    banned = await open_ws(session, base, "s", access_token=token("bad"))
    assert (await banned.post("spam", id="b1"))["error"]["code"] == "banned"


async def test_a_realtime_only_process_refuses_posts_by_name(start_server, session, redis_server):
    base = await start_server(role="realtime", broker=redis_server.url)
    ws = await open_ws(session, base, "ro")
    refused = await ws.post("hi", id="x1")
    assert refused == {"type": "error", "id": "x1", "error": refused["error"]}
    assert refused["error"]["code"] == "posting_not_here"


async def test_a_plain_get_is_told_to_upgrade(start_server, session):
    base = await start_server()
    async with session.get(f"{base}/v1/videos/x/ws") as r:
        assert r.status == 426 and (await r.json())["error"]["code"] == "upgrade_required"
    async with session.get(f"{base}/v1/videos/x/ws", params={"since": "abc"}) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_last_event_id"
    try:
        await session.ws_connect(f"{base}/v1/videos/bad id/ws")
    except aiohttp.WSServerHandshakeError as e:
        assert e.status in (400, 404)
    else:
        raise AssertionError("an invalid video id was upgraded")
