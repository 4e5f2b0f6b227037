"""The SSE stream: wire format, heartbeats, resume seam, slow viewers, reset."""

from __future__ import annotations

import asyncio
import socket
import sqlite3

import httpx
import pytest
from httpx_sse import aconnect_sse

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

    async def keep_posting() -> None:
        for i in range(60):
            await post(session, base, "seam", f"new{i}")

    poster = asyncio.create_task(keep_posting())
    await asyncio.sleep(0)  # let the first posts race the resume
    stream = await open_stream(session, base, "seam", last_event_id=17)
    await poster
    seqs = [c["seq"] for c in await stream.comments(100 - 17, timeout=15)]
    assert seqs == list(range(18, 101))


async def test_since_query_parameter_resumes_too(start_server, session):
    base = await start_server()
    for i in range(5):
        await post(session, base, "q", f"{i}")
    async with session.get(f"{base}/v1/videos/q/stream?since=3") as resp:
        async with asyncio.timeout(5):
            await resp.content.readuntil(b"\n\n")
            assert b"id: 4\n" in await resp.content.readuntil(b"\n\n")
            assert b"id: 5\n" in await resp.content.readuntil(b"\n\n")


async def test_resume_point_older_than_storage_says_reset_in_band(start_server, session, tmp_path):
    db = tmp_path / "pruned.db"
    base = await start_server(storage=f"sqlite:///{db}")
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
    assert reset.event == "reset"
    await post(session, base, "f", "two")
    assert (await stream.next_comment())["seq"] == 2


async def test_slow_viewer_is_cut_and_others_are_not_delayed(start_server, session):
    base = await start_server(viewer_buffer=64 * 1024)
    fast = await open_stream(session, base, "flood")
    # A viewer that never reads, with a tiny receive window set before connecting.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = base.split("//")[1].split(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /v1/videos/flood/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(5):
        await reader.readuntil(b"retry: 2000")
    text = "x" * 2000
    n = 2600  # ~5 MB: past the kernel's socket buffers (tcp_wmem max 4 MiB) and the 64 KiB bound

    async def poster(k: int) -> None:
        for _ in range(k):
            await post(session, base, "flood", text)

    reading = asyncio.create_task(fast.comments(n, timeout=30))  # the fast viewer keeps up
    await asyncio.gather(*(poster(n // 13) for _ in range(13)))
    assert [c["seq"] for c in await reading] == list(range(1, n + 1))
    assert await metric(session, base, "livecomments_slow_viewers_disconnected_total") == 1
    assert await metric(session, base, "livecomments_connections") == 1
    writer.close()
    await writer.wait_closed()


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
