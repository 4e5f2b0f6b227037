"""History pages (issue 22): `next` is null on the last page, also when that page is exactly `limit` long."""

from __future__ import annotations

import aiohttp

from tests.conftest import StartServer
from tests.helpers import history, post


async def test_a_page_exactly_limit_long_that_ends_the_history_has_no_next(
    start_server: StartServer, session: aiohttp.ClientSession,
) -> None:
    base = await start_server()
    for i in range(4):
        await post(session, base, "h", f"c{i}")
    only = await history(session, base, "h", limit=4)
    assert [c["seq"] for c in only["comments"]] == [4, 3, 2, 1]
    assert only["next"] is None  # it used to be a cursor to an empty page

    first = await history(session, base, "h", limit=2)
    assert [c["seq"] for c in first["comments"]] == [4, 3] and first["next"] is not None
    last = await history(session, base, "h", limit=2, before=first["next"])
    assert [c["seq"] for c in last["comments"]] == [2, 1]
    assert last["next"] is None

    # Forward: after seq 2 are 3 and 4, a full page of two that reaches the head.
    head = await history(session, base, "h", limit=3)
    assert [c["seq"] for c in head["comments"]] == [4, 3, 2] and head["next"] is not None
    forward = await history(session, base, "h", limit=2, after=head["next"])
    assert [c["seq"] for c in forward["comments"]] == [3, 4]
    assert forward["next"] is None

    # offset= pages the same way.
    skipped = await history(session, base, "h", limit=2, offset=2)
    assert [c["seq"] for c in skipped["comments"]] == [2, 1]
    assert skipped["next"] is None


async def test_next_still_leads_on_while_there_is_more(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server()
    for i in range(6):
        await post(session, base, "m", f"c{i}")
    seqs: list[int] = []
    pages = 0
    params: dict[str, object] = {"limit": 2}
    while True:
        page = await history(session, base, "m", **params)
        pages += 1
        seqs += [c["seq"] for c in page["comments"]]
        assert page["comments"], "a cursor led to an empty page"
        if page["next"] is None:
            break
        params["before"] = page["next"]
    assert seqs == [6, 5, 4, 3, 2, 1] and pages == 3
    # A video with no comments: an empty page, and no cursor.
    assert await history(session, base, "nothing", limit=2) == {"comments": [], "next": None}
