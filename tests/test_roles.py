"""Roles split the API as DESIGN.md says: writer posts and pages, realtime streams, both does all."""

from __future__ import annotations

import httpx


def test_writer_and_realtime_split_the_api(spawn, redis_server, tmp_path):
    common = ["--broker", redis_server.url, "--storage", f"sqlite:///{tmp_path}/roles.db"]
    writer = spawn("--role", "writer", "--server-id", "w1", *common)
    realtime = spawn("--role", "realtime", "--server-id", "rt1", *common)
    with httpx.Client(base_url=writer.url, timeout=5) as w, httpx.Client(base_url=realtime.url, timeout=5) as rt:
        # the writer has no stream; the realtime process takes no posts and serves no history
        r = w.get("/v1/videos/a/stream")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = rt.post("/v1/videos/a/comments", json={"text": "x", "author": "y"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert rt.get("/v1/videos/a/comments").status_code == 404
        for client, name in ((w, "w1"), (rt, "rt1")):
            r = client.get("/healthz")
            assert r.status_code == 200 and r.headers["X-Served-By"] == name
        # and together they work: a post to the writer reaches a viewer of the realtime process
        with rt.stream("GET", "/v1/videos/a/stream") as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 2000"
            assert w.post("/v1/videos/a/comments", json={"text": "hi", "author": "ana"}).status_code == 201
            next(line for line in lines if line == "event: comment")  # viewer counts may come first
            assert '"text":"hi"' in next(lines)
