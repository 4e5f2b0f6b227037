"""Writers whose clocks disagree, on one PostgreSQL: slow mode, bans, housekeeping and created_at
follow the database's clock, so a writer running 60 s ahead decides as the others do.

A process's clock cannot be skewed from outside without changing the machine's, so the skewed
writer is simulated in this process: while it handles a request, Python's `time.time` (the
standard library's, nothing of ours) runs SKEW_S ahead. Whatever that writer still decided by its
own clock would show here."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from livecomments.backends import open_storage
from livecomments.model import NewComment
from livecomments.tokens import mint
from tests.conftest import StartServer
from tests.helpers import post

SKEW_S = 60.0
SECRET = "a-test-secret-of-at-least-32-bytes!"


def _token(sub: str, *, moderator: bool = False) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint(SECRET, "HS256", sub=sub, name=sub.title(), moderator=moderator)}


ANA, BOB, MOD = _token("ana"), _token("bob"), _token("mod", moderator=True)


async def call(session: Any, method: str, url: str, headers: dict[str, str], json: Any) -> tuple[int, Any, Any]:
    async with session.request(method, url, headers=headers, json=json) as r:
        body = await r.json() if r.content_type == "application/json" else await r.read()
        return r.status, body, r.headers


@contextlib.contextmanager
def clock_ahead(seconds: float = SKEW_S) -> Iterator[None]:
    real = time.time
    time.time = lambda: real() + seconds  # type: ignore[assignment]
    try:
        yield
    finally:
        time.time = real  # type: ignore[assignment]


async def test_a_writer_running_ahead_enforces_slow_mode_and_bans_on_the_database_clock(
        start_server: StartServer, session: Any, postgres_server: Any) -> None:
    db = postgres_server.database()
    a = await start_server(storage=db, auth_jwt_secret=SECRET)
    b = await start_server(storage=db, auth_jwt_secret=SECRET)  # its clock runs ahead while it answers
    status, _, _ = await call(session, "PUT", f"{a}/v1/videos/v/settings", MOD, {"slow_mode_s": 30})
    assert status == 200
    await post(session, a, "v", "first", headers=ANA)
    with clock_ahead():  # 1 s later by the database, 61 s later by b's clock: still within the 30 s
        body = await post(session, b, "v", "too soon", headers=ANA, expect=429)
    assert body["error"]["code"] == "slow_mode", body
    status, body, _ = await call(session, "POST", f"{a}/v1/videos/w/bans", MOD, {"user": "bob", "ttl_s": 45})
    assert status == 201, body
    with clock_ahead():
        body = await post(session, b, "w", "banned?", headers=BOB, expect=403)
        assert body["error"]["code"] == "banned", body
        comment = await post(session, b, "w", "stamped", headers=ANA)
        status, ban, _ = await call(session, "POST", f"{b}/v1/videos/w/bans", MOD, {"user": "eve", "ttl_s": 45})
    now = time.time()
    assert abs(comment["created_at"] - now) < 5, comment  # not SKEW_S in the future
    assert status == 201 and abs(ban["until"] - (now + 45)) < 5, ban


async def test_housekeeping_by_a_writer_running_ahead_keeps_a_ban_that_has_not_ended(postgres_server: Any) -> None:
    db = postgres_server.database()
    a, b = await open_storage(db), await open_storage(db)
    try:
        until = await a.ban("v", "u-bob", 45)
        with clock_ahead():
            await b.forget_expired()  # by b's clock the ban ended 15 s ago
            assert (await b.post_policy("v", "u-bob"))[0] == pytest.approx(until)
            entry = await b.delete("v", (await a.add(NewComment("v", "ana", "hi", user="u-ana"))).seq,
                                   by="u-ana", moderator=False)
        assert (await a.post_policy("v", "u-bob"))[0] == pytest.approx(until)
        assert entry is not None and abs(entry.created_at - time.time()) < 5  # the delete entry too
    finally:
        await a.close()
        await b.close()
