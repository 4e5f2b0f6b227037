"""Arbitrary bodies, ids, cursors and resume points against a real `livecomments serve` process:
a refused request stores nothing, the server stays up, and a long-lived viewer is undisturbed."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def test_arbitrary_requests(spawn, tmp_path):
    server = spawn("--storage", f"sqlite:///{tmp_path}/prop.db")
    with httpx.Client(base_url=server.url, timeout=5) as client, \
         httpx.Client(base_url=server.url, timeout=10) as viewer_client, \
         viewer_client.stream("GET", "/v1/videos/watched/stream") as viewer:
        lines = viewer.iter_lines()
        assert next(lines) == "retry: 2000"
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

        check()
        assert client.get("/healthz").status_code == 200
        r = client.post("/v1/videos/watched/comments", json={"text": "still here", "author": "z"})
        last = r.json()["seq"]
        assert last == expected["watched"] + 1
        seqs = []
        for line in lines:
            if line.startswith("id: "):
                seqs.append(int(line[4:]))
                if seqs[-1] == last:
                    break
        assert seqs == list(range(1, last + 1))  # the long-lived viewer missed nothing
