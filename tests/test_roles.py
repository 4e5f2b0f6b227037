"""Roles split the API as DESIGN.md says: writer posts and pages, realtime streams, both does all."""

from __future__ import annotations

from tests.fixtures.processes import serve_args
from tests.helpers import post, status
from tests.sse import open_stream


async def test_writer_and_realtime_split_the_api(spawn, redis_server, session):
    writer = spawn(*serve_args("--server-id", "w1", role="writer", transport=redis_server.url))
    realtime = spawn(*serve_args("--server-id", "rt1", role="realtime", transport=redis_server.url))
    w, rt = writer.url, realtime.url
    # the writer has no stream; the realtime process takes no posts and serves no history
    async with session.get(f"{w}/v1/videos/a/stream") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    assert (await post(session, rt, "a", "x", "y", expect=404))["error"]["code"] == "not_found"
    assert await status(session, f"{rt}/v1/videos/a/comments") == 404
    for base, name in ((w, "w1"), (rt, "rt1")):
        async with session.get(f"{base}/healthz") as r:
            assert r.status == 200 and r.headers["X-Served-By"] == name
    # and together they work: a post to the writer reaches a viewer of the realtime process
    stream = await open_stream(session, rt, "a")
    assert stream.opening is not None and stream.opening.retry == 2000
    await post(session, w, "a", "hi", "ana")
    assert (await stream.next_comment())["text"] == "hi"  # viewer counts may come first
