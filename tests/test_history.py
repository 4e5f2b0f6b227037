"""History pages: cursors back and forward, stable under concurrent inserts; offset the slow way."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import history, post


async def test_pages_back_newest_first_then_forward(start_server, session):
    base = await start_server()
    for i in range(1, 121):
        await post(session, base, "h", f"c{i}")
    page = await history(session, base, "h", limit=50)
    assert [c["seq"] for c in page["comments"]] == list(range(120, 70, -1))
    page2 = await history(session, base, "h", limit=50, before=page["next"])
    assert [c["seq"] for c in page2["comments"]] == list(range(70, 20, -1))
    page3 = await history(session, base, "h", limit=50, before=page2["next"])
    assert [c["seq"] for c in page3["comments"]] == list(range(20, 0, -1))
    assert page3["next"] is None
    forward = await history(session, base, "h", limit=30, after=page2["next"])  # after seq 21
    assert [c["seq"] for c in forward["comments"]] == list(range(22, 52))


async def test_cursor_pages_stay_exact_while_comments_arrive(start_server, session):
    base = await start_server()
    for i in range(100):
        await post(session, base, "busy", f"c{i}")
    seen: list[int] = []
    page = await history(session, base, "busy", limit=10)
    seen += [c["seq"] for c in page["comments"]]
    while page["next"] is not None:
        await asyncio.gather(*(post(session, base, "busy", "new") for _ in range(5)))  # inserts between pages
        page = await history(session, base, "busy", limit=10, before=page["next"])
        seen += [c["seq"] for c in page["comments"]]
    assert seen == list(range(100, 0, -1))  # no duplicate, no skip


async def test_offset_pages_work_and_show_why_cursors_win(start_server, session):
    base = await start_server()
    for i in range(30):
        await post(session, base, "o", f"c{i}")
    page = await history(session, base, "o", limit=10, offset=10)
    assert [c["seq"] for c in page["comments"]] == list(range(20, 10, -1))
    await post(session, base, "o", "new")  # shifts every offset by one
    page2 = await history(session, base, "o", limit=10, offset=20)
    assert page2["comments"][0]["seq"] == 11  # seen already: offsets duplicate under inserts


@pytest.mark.parametrize("cursor", ["garbage", "", "AAAAAAAAAAIAoW9ZGN2nIpE", "%%%", "A" * 500])
async def test_garbage_or_forged_cursor_is_refused(start_server, session, cursor):
    base = await start_server()
    async with session.get(f"{base}/v1/videos/h/comments", params={"before": cursor}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_cursor"


async def test_cursor_of_another_video_is_refused(start_server, session):
    base = await start_server()
    for _ in range(3):
        await post(session, base, "a", "x")
    page = await history(session, base, "a", limit=1)
    async with session.get(f"{base}/v1/videos/b/comments", params={"before": page["next"]}) as r:
        assert r.status == 400


async def test_a_tampered_cursor_is_refused(start_server, session):
    base = await start_server()
    for _ in range(3):
        await post(session, base, "a", "x")
    cursor = (await history(session, base, "a", limit=1))["next"]
    tampered = cursor[:5] + ("B" if cursor[5] != "B" else "C") + cursor[6:]
    async with session.get(f"{base}/v1/videos/a/comments", params={"before": tampered}) as r:
        assert r.status == 400


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "201"}, {"limit": "x"}, {"offset": "-1"},
                                    {"before": "a", "after": "b"}])
async def test_bad_page_parameters(start_server, session, params):
    base = await start_server()
    async with session.get(f"{base}/v1/videos/h/comments", params=params) as r:
        assert r.status == 400
        assert "error" in await r.json()


async def test_empty_history(start_server, session):
    base = await start_server()
    assert await history(session, base, "none") == {"comments": [], "next": None}
