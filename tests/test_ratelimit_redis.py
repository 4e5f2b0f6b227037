"""Rate limits shared through a real Redis: two writer processes, outages, keys that expire."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import redis.asyncio as aioredis

from tests.conftest import StartServer
from tests.fixtures.processes import RedisProcess, serve_args, sqlite_url
from tests.helpers import all_seqs, metric, post, post_reply

SECRET = "a-test-secret-of-at-least-32-bytes!"
ERRORS = "livecomments_rate_limit_store_errors_total"


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


async def test_two_writers_share_one_burst(spawn: Any, redis_server: RedisProcess, tmp_path: Path,
                                           session: aiohttp.ClientSession) -> None:
    writers = [
        # a storage each: what is shared is the limit, through Redis
        spawn(*serve_args("--auth-jwt-secret", SECRET, "--rate-limit-redis", redis_server.url, "--rate-limit-per-s", "0.05",
                          "--rate-limit-burst", "4", storage=sqlite_url(tmp_path / f"w{i}.db")))
        for i in range(2)
    ]
    statuses = [(await post_reply(session, writers[i % 2].url, "v1", token=token("ana"))).status for i in range(10)]
    assert statuses.count(201) == 4, statuses  # the burst across both, not twice it
    assert statuses[:4] == [201] * 4 and set(statuses[4:]) == {429}
    assert [(await post_reply(session, w.url, "v1", token=token("bob"))).status for w in writers] == [201, 201]  # bob has his own
    stored = [len(await all_seqs(session, w.url, "v1")) for w in writers]
    assert sum(stored) == 6


async def test_the_broker_redis_is_used_and_keys_expire(start_server: StartServer, redis_server: RedisProcess,
                                                        session: aiohttp.ClientSession) -> None:
    base = await start_server(broker=redis_server.url, auth_jwt_secret=SECRET, rate_limit_per_s=1.0, rate_limit_burst=5)
    await post(session, base, "v1", token=token("ana"))
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = await client.keys("lc:rl:*")
        assert keys == [b"lc:rl:u:ana"]
        assert 0 < await client.pttl(keys[0]) <= 6000  # full again after burst/rate = 5 s: then it is gone
    finally:
        await client.aclose()


async def test_an_outage_fails_open_is_counted_and_heals(start_server: StartServer, redis_server: RedisProcess,
                                                         session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET, rate_limit_redis=redis_server.url,
                              rate_limit_per_s=0.05, rate_limit_burst=2)
    await post(session, base, "v1", token=token("ana"))
    redis_server.stop()
    for _ in range(3):
        await post(session, base, "v1", token=token("ana"))  # open: not limited
    assert await metric(session, base, ERRORS + '{outcome="allowed"}') == 3
    redis_server.start()  # empty, same port: the script is loaded again, the limit is back
    statuses = [(await post_reply(session, base, "v1", token=token("ana"))).status for _ in range(3)]
    assert statuses == [201, 201, 429]


async def test_an_outage_fails_closed_when_configured(start_server: StartServer, redis_server: RedisProcess,
                                                      session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET, rate_limit_redis=redis_server.url, rate_limit_fail_open=False,
                              rate_limit_per_s=1.0)
    redis_server.stop()
    async with asyncio.timeout(5):
        reply = await post_reply(session, base, "v1", token=token("ana"))
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "1"
    assert reply.body["error"]["code"] == "rate_limit_unavailable"
    assert await all_seqs(session, base, "v1") == []
    assert await metric(session, base, ERRORS + '{outcome="refused"}') == 1
    assert await metric(session, base, 'livecomments_comments_rejected_total{code="rate_limit_unavailable"}') == 1


async def readyz(session: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, Any]]:
    async with asyncio.timeout(5):
        async with session.get(f"{base}/readyz") as r:
            return r.status, await r.json()


async def test_readyz_is_not_ready_while_fail_closed_limits_refuse_every_post(
    start_server: StartServer, redis_server: RedisProcess, session: aiohttp.ClientSession,
) -> None:
    base = await start_server(auth_jwt_secret=SECRET, rate_limit_redis=redis_server.url, rate_limit_fail_open=False,
                              rate_limit_per_s=1.0)
    assert await readyz(session, base) == (200, {"status": "ready"})
    redis_server.stop()
    assert await readyz(session, base) == (503, {"status": "not_ready", "reason": "rate_limit_unavailable"})
    await post(session, base, "v1", token=token("ana"), expect=503)  # what the balancer is told is what posts get
    redis_server.start()
    assert await readyz(session, base) == (200, {"status": "ready"})
    await post(session, base, "v1", token=token("ana"))


async def test_readyz_stays_ready_while_fail_open_limits_let_posts_through(
    start_server: StartServer, redis_server: RedisProcess, session: aiohttp.ClientSession,
) -> None:
    base = await start_server(auth_jwt_secret=SECRET, rate_limit_redis=redis_server.url, rate_limit_per_s=1.0)
    redis_server.stop()
    assert await readyz(session, base) == (200, {"status": "ready"})
    await post(session, base, "v1", token=token("ana"))
