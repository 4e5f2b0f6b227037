"""Arbitrary bodies, ids, cursors and resume points against a real `livecomments serve` process:
a refused request stores nothing, the server stays up, and a long-lived viewer is undisturbed."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import post
from tests.sse import open_stream

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
comment_like = st.fixed_dictionaries(
    {"text": st.text(max_size=40), "author": st.text(max_size=70)},
    optional={"extra": json_values},
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(orjson.dumps),
    comment_like.map(orjson.dumps),
)
video_ids = st.sampled_from(["watched", "other"]) | st.text(max_size=70)
content_types = st.sampled_from(["application/json", "text/plain", "application/json; charset=utf-8", ""])


def stored(client: httpx.Client) -> list[int]:
    r = client.get("/v1/videos/watched/comments", params={"limit": "200"})
    return [c["seq"] for c in r.json()["comments"]]


async def test_arbitrary_requests(spawn, session):
    server = spawn()
    viewer = await open_stream(session, server.url, "watched")
    assert viewer.opening is not None and viewer.opening.retry == 2000
    with httpx.Client(base_url=server.url, timeout=5) as client:
        expected = {"watched": 0}

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(video=video_ids, body=bodies, ctype=content_types, cursor=st.text(max_size=40),
               last_id=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12))
        def check(video: str, body: bytes, ctype: str, cursor: str, last_id: str) -> None:
            before = stored(client)
            headers = {"Content-Type": ctype} if ctype else {}
            r = client.post(f"/v1/videos/{quote(video, safe='')}/comments", content=body, headers=headers)
            assert r.status_code in (201, 400, 404, 405, 413, 415, 422), r.text
            if r.status_code == 201:
                assert video in ("watched", "other") or r.json()["video_id"] == video
                if video == "watched":
                    expected["watched"] += 1
                    assert stored(client) == [r.json()["seq"], *before]
            else:
                error = r.json()["error"]
                assert error["code"] and error["message"]
                assert stored(client) == before  # nothing stored for a refused request
            r = client.get("/v1/videos/watched/comments", params={"before": cursor})
            assert r.status_code in (200, 400)
            with client.stream("GET", "/v1/videos/watched/stream", headers={"Last-Event-ID": last_id.strip()}) as s:
                assert s.status_code in (200, 400)

        await asyncio.to_thread(check)  # hypothesis drives a blocking client; the viewer reads on the loop
        assert client.get("/healthz").status_code == 200
    last = (await post(session, server.url, "watched", "still here", "z"))["seq"]
    assert last == expected["watched"] + 1
    seqs: list[int] = []
    async with asyncio.timeout(30):
        while not seqs or seqs[-1] != last:
            event = await viewer.next()
            if event.id is not None:
                seqs.append(int(event.id))
    assert seqs == list(range(1, last + 1))  # the long-lived viewer missed nothing
