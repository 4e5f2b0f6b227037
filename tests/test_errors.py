"""Bad input: the JSON error shape, a fitting status, nothing stored, other viewers undisturbed."""

from __future__ import annotations

import pytest

from tests.helpers import all_seqs, post
from tests.sse import open_stream

JSON = {"Content-Type": "application/json"}


def bad_posts() -> list[tuple[str, str, bytes, dict[str, str], int, str]]:
    ok = b'{"text": "hi", "author": "ana"}'
    return [
        ("malformed json", "v", b'{"text": "hi", ', JSON, 400, "invalid_json"),
        ("not an object", "v", b'["hi"]', JSON, 422, "invalid_body"),
        ("wrong content type", "v", ok, {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ("no content type", "v", ok, {}, 415, "unsupported_media_type"),
        ("empty text", "v", b'{"text": "   ", "author": "ana"}', JSON, 422, "text_empty"),
        ("text too long", "v", b'{"text": "' + b"a" * 2001 + b'", "author": "ana"}', JSON, 422, "text_too_long"),
        ("text not a string", "v", b'{"text": 5, "author": "ana"}', JSON, 422, "invalid_text"),
        ("lone surrogate", "v", b'{"text": "\\ud800", "author": "ana"}', JSON, 400, "invalid_json"),
        ("missing author", "v", b'{"text": "hi"}', JSON, 422, "invalid_author"),
        ("author too long", "v", b'{"text": "hi", "author": "' + b"b" * 65 + b'"}', JSON, 422, "author_too_long"),
        ("invalid video id", "a.b", ok, JSON, 400, "invalid_video_id"),
        ("video id too long", "v" * 65, ok, JSON, 400, "invalid_video_id"),
        ("oversized body", "v", b'{"text": "' + b"a" * 30000 + b'", "author": "ana"}', JSON, 413, "body_too_large"),
    ]


@pytest.mark.parametrize(("case", "video", "body", "headers", "status", "code"), bad_posts(),
                         ids=[c[0] for c in bad_posts()])
async def test_bad_post_is_refused_and_stores_nothing(start_server, session, case, video, body, headers,
                                                      status, code):
    base = await start_server()
    watcher = await open_stream(session, base, "v")
    async with session.post(f"{base}/v1/videos/{video}/comments", data=body, headers=headers) as r:
        assert r.status == status
        assert r.content_type == "application/json"
        error = (await r.json())["error"]
        assert error["code"] == code and error["message"]
    assert await all_seqs(session, base, "v") == []
    # the viewer's stream is still open and sees the next good comment
    await post(session, base, "v", "after")
    assert (await watcher.next_comment())["text"] == "after"


async def test_exactly_max_text_is_accepted(start_server, session):
    base = await start_server()
    comment = await post(session, base, "v", "é" * 2000)
    assert len(comment["text"]) == 2000


async def test_text_is_trimmed(start_server, session):
    base = await start_server()
    assert (await post(session, base, "v", "  hi \n"))["text"] == "hi"


async def test_limits_come_from_config(start_server, session):
    base = await start_server(max_text=10)
    async with session.post(f"{base}/v1/videos/v/comments", json={"text": "x" * 11, "author": "a"}) as r:
        assert (await r.json())["error"]["code"] == "text_too_long"


async def test_unknown_route_and_wrong_method_use_the_error_shape(start_server, session):
    base = await start_server()
    async with session.get(f"{base}/nope") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    async with session.delete(f"{base}/v1/videos/v/comments") as r:
        assert r.status == 405 and (await r.json())["error"]["code"] == "method_not_allowed"


async def test_invalid_video_id_on_stream(start_server, session):
    base = await start_server()
    async with session.get(f"{base}/v1/videos/{'x' * 65}/stream") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_video_id"


async def test_idempotency_key_returns_the_first_comment(start_server, session):
    base = await start_server()
    first = await post(session, base, "v", "once", headers={"Idempotency-Key": "k1"})
    again = await post(session, base, "v", "once", headers={"Idempotency-Key": "k1"})
    other = await post(session, base, "v", "twice", headers={"Idempotency-Key": "k2"})
    assert again == first
    assert other["seq"] == 2
    assert await all_seqs(session, base, "v") == [1, 2]


async def test_bad_idempotency_key_is_refused(start_server, session):
    base = await start_server()
    async with session.post(f"{base}/v1/videos/v/comments", json={"text": "a", "author": "b"},
                            headers={"Idempotency-Key": "x" * 129}) as r:
        assert r.status == 400
    assert await all_seqs(session, base, "v") == []
