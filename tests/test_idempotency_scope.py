"""An Idempotency-Key belongs to its poster (the token's sub, else the client's address): another
poster's same key is a new comment, never the first poster's, and says nothing about his keys.
A retry after the comment was deleted is told so. Real servers, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import aiohttp

from livecomments.tokens import mint
from tests.conftest import StartServer
from tests.helpers import all_seqs

SECRET = "a-test-secret-of-at-least-32-bytes!"
XFF = "X-Forwarded-For"


def token(sub: str, *, moderator: bool = False) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint(SECRET, "HS256", sub=sub, name=sub.title(), moderator=moderator)}


async def send(session: aiohttp.ClientSession, base: str, text: str, key: str,
               headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{base}/v1/videos/v/comments", json={"text": text, "author": "x"},
                            headers={"Idempotency-Key": key, **headers}) as r:
        return r.status, await r.json()


async def test_two_users_with_one_key_each_get_their_own_comment(
    start_server: StartServer, session: aiohttp.ClientSession, storage_url: str,
) -> None:
    base = await start_server(storage=storage_url, auth_jwt_secret=SECRET)
    ana, bob = token("ana"), token("bob")
    status, first = await send(session, base, "ana says hi", "k1", ana)
    assert status == 201 and (first["author"], first["text"]) == ("Ana", "ana says hi")
    status, his = await send(session, base, "bob says hi", "k1", bob)  # another body: no 422 to probe with
    assert status == 201 and (his["seq"], his["author"], his["text"]) == (2, "Bob", "bob says hi")
    status, same_body = await send(session, base, "ana says hi", "k2", ana)
    assert status == 201
    status, bobs = await send(session, base, "ana says hi", "k2", bob)  # the same body too: still his own
    assert status == 201 and bobs["seq"] == 4 and bobs["author"] == "Bob"
    assert await send(session, base, "ana says hi", "k1", ana) == (201, first)  # her retry: her first
    assert await send(session, base, "bob says hi", "k1", bob) == (201, his)
    status, body = await send(session, base, "something else", "k1", ana)
    assert (status, body["error"]["code"]) == (422, "idempotency_key_reused")
    assert await all_seqs(session, base, "v") == [1, 2, 3, 4]


async def test_anonymous_posters_are_told_apart_by_address(
    start_server: StartServer, session: aiohttp.ClientSession,
) -> None:
    base = await start_server(trusted_proxies=("127.0.0.1",))
    one, two = {XFF: "203.0.113.7"}, {XFF: "203.0.113.8"}
    status, first = await send(session, base, "hello", "guessable-1", one)
    assert status == 201
    status, other = await send(session, base, "hello", "guessable-1", two)
    assert status == 201 and other["seq"] == 2
    assert await send(session, base, "hello", "guessable-1", one) == (201, first)
    assert await all_seqs(session, base, "v") == [1, 2]


async def test_a_retry_after_a_delete_says_the_comment_was_deleted(
    start_server: StartServer, session: aiohttp.ClientSession, storage_url: str,
) -> None:
    base = await start_server(storage=storage_url, auth_jwt_secret=SECRET)
    ana = token("ana")
    status, first = await send(session, base, "hi", "k1", ana)
    assert status == 201
    async with session.delete(f"{base}/v1/videos/v/comments/{first['seq']}", headers=token("mod", moderator=True)) as r:
        assert r.status == 204
    status, body = await send(session, base, "hi", "k1", ana)
    assert status == 422 and body["error"]["code"] == "idempotency_key_reused"
    assert "deleted" in body["error"]["message"] and "another" not in body["error"]["message"]
    assert await all_seqs(session, base, "v") == []  # nothing new stored (seq 2 is the delete entry)
    status, again = await send(session, base, "hi", "k2", ana)
    assert status == 201 and again["seq"] == 3
