"""A stream that storage cannot serve now (it cannot read the video's head) is turned away in a
form its client retries: an EventSource gets a 200 with `retry:` and an in-band
`storage_unavailable` error (a browser never retries a non-200), others a 503; the driver's
detail stays in the log, and no viewer is left behind."""

from __future__ import annotations

import pytest

from tests.helpers import metric, post, until_status
from tests.sse import open_stream


async def test_a_stream_during_a_storage_outage_is_turned_away_so_that_it_comes_back(
    start_server, session, own_postgres_server
):
    base = await start_server(storage=own_postgres_server.database())
    await post(session, base, "o", "before")
    own_postgres_server.halt()
    try:
        stream = await open_stream(session, base, "o", headers={"Accept": "text/event-stream"}, timeout=30)
        assert stream.opening is not None and stream.opening.retry == 2000  # and a 200
        error = await stream.next()
        assert error.event == "error" and error.json()["error"]["code"] == "storage_unavailable"
        assert "127.0.0.1" not in error.data  # the driver's detail stays in the log
        with pytest.raises(EOFError):
            await stream.next()
        stream.close()
        async with session.get(f"{base}/v1/videos/o/stream") as r:
            body = await r.json()
            assert (r.status, body["error"]["code"]) == (503, "storage_unavailable"), body
            assert "127.0.0.1" not in body["error"]["message"]
            assert r.headers["Retry-After"] == "2"
        assert await metric(session, base, "livecomments_connections") == 0
    finally:
        own_postgres_server.resume()
    await until_status(session, f"{base}/readyz", 200, timeout=30)
    reader = await open_stream(session, base, "o", last_event_id=0, timeout=30)  # back: served again
    assert (await reader.next_comment(timeout=30))["text"] == "before"


async def test_a_resume_whose_catch_up_storage_cannot_read_ends_cleanly_and_resumes_later(
    start_server, session, own_postgres_server
):
    base = await start_server(storage=own_postgres_server.database())
    watcher = await open_stream(session, base, "r")  # the video is watched: its head is known here
    for text in ("one", "two"):
        await post(session, base, "r", text)
    assert [c["seq"] for c in await watcher.comments(2)] == [1, 2]
    own_postgres_server.halt()
    try:
        # a 200: joined from the known head; the backlog read then fails
        stream = await open_stream(session, base, "r", last_event_id=0, timeout=30)
        assert stream.opening is not None and stream.opening.retry == 2000
        with pytest.raises(EOFError):  # a clean end, not an error page inside the stream
            await stream.next(timeout=30)
        stream.close()
        assert await metric(session, base, "livecomments_connections") == 1  # the watcher only
    finally:
        own_postgres_server.resume()
    await until_status(session, f"{base}/readyz", 200, timeout=30)
    resumed = await open_stream(session, base, "r", last_event_id=0, timeout=30)
    assert [c["seq"] for c in await resumed.comments(2, timeout=30)] == [1, 2]
