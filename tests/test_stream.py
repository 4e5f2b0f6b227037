"""The SSE stream: wire format, heartbeats, resume seam, slow viewers, reset."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.fixtures.processes import sqlite_url
from tests.fixtures.raw_stream import stalled_stream
from tests.helpers import metric, post, until_metric
from tests.sse import open_stream


async def test_wire_bytes_are_exact(start_server, session):
    base = await start_server()
    async with session.get(f"{base}/v1/videos/abc/stream") as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["X-Served-By"]
        async with asyncio.timeout(5):
            assert await resp.content.readuntil(b"\n\n") == b"retry: 2000\n\n"
            assert await resp.content.readuntil(b"\n\n") == b'event: viewers\ndata: {"video_id":"abc","viewers":1}\n\n'
            comment = await post(session, base, "abc", "goal!", "ana")
            frame = await resp.content.readuntil(b"\n\n")
        expected = (
            b'id: 1\nevent: comment\ndata: {"video_id":"abc","seq":1,"author":"ana","text":"goal!",'
            b'"created_at":' + repr(comment["created_at"]).encode() + b"}\n\n"
        )
        assert frame == expected


async def test_a_parser_we_did_not_write_reads_the_stream(start_server):
    base = await start_server()
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        async with aconnect_sse(client, "GET", "/v1/videos/v1/stream") as source:
            events = source.aiter_sse()
            first = await anext(events)
            assert first.retry == 2000
            greeting = await anext(events)  # the newcomer is told the viewer count at once
            assert (greeting.event, greeting.data, greeting.id) == ("viewers", '{"video_id":"v1","viewers":1}', "")
            for i in range(3):
                r = await client.post("/v1/videos/v1/comments", json={"text": f"c{i}", "author": "bo"})
                assert r.status_code == 201
            got = [await asyncio.wait_for(anext(events), 5) for _ in range(3)]
    assert [e.event for e in got] == ["comment"] * 3
    assert [e.id for e in got] == ["1", "2", "3"]
    assert [e.json()["text"] for e in got] == ["c0", "c1", "c2"]


async def test_heartbeat_lines(start_server, session):
    base = await start_server(ping_interval=0.1)
    stream = await open_stream(session, base, "quiet")
    assert (await stream.next(timeout=3)).event == "viewers"  # the newcomer's count comes first
    event = await stream.next(timeout=3)
    assert event.comments == ["ping"] and event.data == ""


async def test_every_viewer_gets_every_comment_in_order(start_server, session):
    base = await start_server()
    streams = [await open_stream(session, base, "hot") for _ in range(20)]
    other = await open_stream(session, base, "other")
    for i in range(30):
        await post(session, base, "hot", f"m{i}")
    await post(session, base, "other", "x")
    for stream in streams:
        assert [c["seq"] for c in await stream.comments(30)] == list(range(1, 31))
    assert (await other.next_comment())["text"] == "x"
    assert await metric(session, base, "livecomments_comments_delivered_total") == 20 * 30 + 1


async def test_resume_replays_then_goes_live_without_gap_or_duplicate(start_server, session):
    base = await start_server(backlog_limit=7)  # several backlog pages
    for i in range(40):
        await post(session, base, "seam", f"old{i}")

    started = asyncio.Event()

    async def keep_posting() -> None:
        for i in range(60):
            await post(session, base, "seam", f"new{i}")
            started.set()

    poster = asyncio.create_task(keep_posting())
    async with asyncio.timeout(10):
        await started.wait()  # the resume races posts in flight, over several backlog pages
    stream = await open_stream(session, base, "seam", last_event_id=17)
    await poster
    seqs = [c["seq"] for c in await stream.comments(100 - 17, timeout=15)]
    assert seqs == list(range(18, 101))


async def test_since_query_parameter_resumes_too(start_server, session):
    base = await start_server()
    for i in range(5):
        await post(session, base, "q", f"{i}")
    stream = await open_stream(session, base, "q", since=3)
    for seq in ("4", "5"):
        event = await stream.next()
        assert (event.event, event.id) == ("comment", seq)


async def test_resume_point_older_than_storage_says_reset_in_band(start_server, session, tmp_path):
    db = tmp_path / "pruned.db"
    base = await start_server(storage=sqlite_url(db))
    for i in range(10):
        await post(session, base, "old", f"{i}")
    with sqlite3.connect(db) as conn:  # retention pruned the first five
        conn.execute("DELETE FROM comments WHERE video_id='old' AND seq <= 5")
    stream = await open_stream(session, base, "old", last_event_id=2)
    reset = await stream.next()
    assert reset.event == "reset" and reset.json() == {"oldest_seq": 6}
    assert [c["seq"] for c in await stream.comments(5)] == [6, 7, 8, 9, 10]


async def test_resume_point_from_the_future_resets_to_now(start_server, session):
    base = await start_server()
    await post(session, base, "f", "one")
    stream = await open_stream(session, base, "f", last_event_id=500)
    reset = await stream.next()
    assert reset.event == "reset" and reset.json() == {"oldest_seq": 2}
    await post(session, base, "f", "two")
    assert (await stream.next_comment())["seq"] == 2


async def test_resume_ahead_of_this_servers_feed_is_a_normal_resume(start_server, session, tmp_path):
    """Last-Event-ID names a seq storage holds but this server's feed has not brought yet:
    served like any resume, no reset and no duplicate."""
    db = sqlite_url(tmp_path / "shared.db")
    realtime = await start_server(storage=db, repair_interval=60)  # no head check: only a gap repairs
    writer = await start_server(storage=db)  # same storage, its own broker: its comments never reach realtime
    watcher = await open_stream(session, realtime, "lag")
    await post(session, realtime, "lag", "one")
    assert (await watcher.next_comment())["seq"] == 1
    for text in ("two", "three"):  # acknowledged by the writer, not yet seen by realtime
        await post(session, writer, "lag", text)
    resumed = await open_stream(session, realtime, "lag", last_event_id=3)
    await post(session, realtime, "lag", "four")  # realtime sees the gap and repairs 2..3 from storage
    assert [c["seq"] for c in await watcher.comments(3)] == [2, 3, 4]
    event = await resumed.next()
    while event.event == "viewers":  # counts (its greeting, the update for both) are not the log
        event = await resumed.next()
    assert (event.event, event.id) == ("comment", "4")


async def test_head_on_a_stream_is_headers_only_and_registers_no_viewer(start_server, session):
    base = await start_server()
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        # Pipelined: the next response must follow the HEAD's headers at once, with no body between.
        writer.write(b"HEAD /v1/videos/h/stream HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            following = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
        await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"content-type: text/event-stream" in head.lower()
    assert following.startswith(b"HTTP/1.1 200 "), following
    assert await metric(session, base, "livecomments_connections") == 0
    assert await metric(session, base, "livecomments_watched_videos") == 0


async def test_head_on_a_stream_validates_like_get(start_server, session):
    base = await start_server()
    async with session.head(f"{base}/v1/videos/bad$id/stream") as r:
        assert r.status == 400
    async with session.head(f"{base}/v1/videos/ok/stream", headers={"Last-Event-ID": "x"}) as r:
        assert r.status == 400


async def test_slow_viewer_is_cut_and_others_are_not_delayed(start_server, session):
    base = await start_server(viewer_buffer=64 * 1024)
    fast = await open_stream(session, base, "flood")
    slow = await stalled_stream(base, "/v1/videos/flood/stream")  # joined, then never reads
    text = "x" * 2000
    n = 2600  # ~5 MB: past the kernel's socket buffers (tcp_wmem max 4 MiB) and the 64 KiB bound

    async def poster(k: int) -> None:
        for _ in range(k):
            await post(session, base, "flood", text)

    try:
        reading = asyncio.create_task(fast.comments(n, timeout=30))  # the fast viewer keeps up
        await asyncio.gather(*(poster(n // 13) for _ in range(13)))
        assert [c["seq"] for c in await reading] == list(range(1, n + 1))
        assert await metric(session, base, "livecomments_slow_viewers_disconnected_total") == 1
        assert await metric(session, base, "livecomments_connections") == 1
    finally:
        slow.close()


async def test_counts_return_to_zero_after_viewers_leave(start_server, session):
    base = await start_server(unwatch_linger=0.01)
    streams = [await open_stream(session, base, f"v{i % 3}") for i in range(6)]
    assert await metric(session, base, "livecomments_connections") == 6
    assert await metric(session, base, "livecomments_watched_videos") == 3
    for stream in streams:
        stream.close()
    await until_metric(session, base, "livecomments_connections", 0, timeout=5)
    await until_metric(session, base, "livecomments_watched_videos", 0, timeout=5)


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "", "9" * 30])
async def test_non_numeric_last_event_id_is_refused(start_server, session, bad):
    base = await start_server()
    async with session.get(f"{base}/v1/videos/x/stream", headers={"Last-Event-ID": bad}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_last_event_id"
    assert await metric(session, base, "livecomments_connections") == 0
