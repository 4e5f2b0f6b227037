"""Rate limits (issue 22): only a well-formed post takes a token. A post refused as malformed
(400, 413, 415, 422) costs the server validation only, stores nothing, and leaves the client's
bucket as it was: a client that sent broken bodies still gets its whole burst for real ones."""

from __future__ import annotations

import time

import aiohttp
import jwt

from tests.conftest import StartServer
from tests.helpers import all_seqs, post_reply

SLOW = {"rate_limit_per_s": 0.05, "rate_limit_burst": 3}  # a token back every 20 s: none during a test
SECRET = "a-test-secret-of-at-least-32-bytes!"


async def refused_posts(session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> list[tuple[int, str]]:
    """Five malformed posts, one of each kind; (status, code) of each."""
    url = f"{base}/v1/videos/v1/comments"
    json_type = {**headers, "Content-Type": "application/json"}
    answers = []
    for data, sent in [
        (b"{not json", json_type),
        (b'{"text": "hi", "author": "ana"}', {**headers, "Content-Type": "text/plain"}),
        (b'{"text": "   ", "author": "ana"}', json_type),
        (b'{"text": "hi", "author": "ana"}', {**json_type, "Idempotency-Key": "\u00e9t\u00e9".encode().decode("latin-1")}),
        (b'{"text": "' + b"x" * 100_000 + b'", "author": "ana"}', json_type),
    ]:
        async with session.post(url, data=data, headers=sent) as r:
            answers.append((r.status, (await r.json())["error"]["code"]))
    return answers


async def test_malformed_posts_leave_an_anonymous_clients_bucket_alone(start_server: StartServer,
                                                                      session: aiohttp.ClientSession) -> None:
    base = await start_server(**SLOW)
    assert [status for status, _ in await refused_posts(session, base, {})] == [400, 415, 422, 400, 413]
    statuses = [(await post_reply(session, base, "v1", f"c{i}")).status for i in range(4)]
    assert statuses == [201, 201, 201, 429]  # the burst is whole (it was 429 from the first)
    assert await all_seqs(session, base, "v1") == [1, 2, 3]
    # Out of tokens, a malformed post is still told what is wrong with it, and stores nothing.
    assert (await refused_posts(session, base, {}))[0] == (400, "invalid_json")
    assert await all_seqs(session, base, "v1") == [1, 2, 3]


async def test_malformed_posts_leave_a_users_bucket_alone(start_server: StartServer,
                                                         session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET, **SLOW)
    token = jwt.encode({"sub": "ana", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    bearer = {"Authorization": f"Bearer {token}"}
    assert [status for status, _ in await refused_posts(session, base, bearer)] == [400, 415, 422, 400, 413]
    statuses = [(await post_reply(session, base, "v1", f"c{i}", author=None, token=token)).status for i in range(4)]
    assert statuses == [201, 201, 201, 429]
