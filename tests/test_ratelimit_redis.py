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
from tests.fixtures.processes import RedisProcess
from tests.helpers import all_seqs, metric

SECRET = "a-test-secret-of-at-least-32-bytes!"
ERRORS = "livecomments_rate_limit_store_errors_total"


def bearer(sub: str) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def send(session: aiohttp.ClientSession, base: str, headers: dict[str, str], video: str = "v1") -> int:
    async with session.post(f"{base}/v1/videos/{video}/comments", json={"text": "hi"}, headers=headers) as r:
        await r.read()
        return r.status


async def test_two_writers_share_one_burst(spawn: Any, redis_server: RedisProcess, tmp_path: Path,
                                           session: aiohttp.ClientSession) -> None:
    writers = [
        spawn("--storage", f"sqlite:///{tmp_path}/w{i}.db", "--auth-jwt-secret", SECRET,
              "--rate-limit-redis", redis_server.url, "--rate-limit-per-s", "0.05", "--rate-limit-burst", "4")
        for i in range(2)
    ]
    statuses = [await send(session, writers[i % 2].url, bearer("ana")) for i in range(10)]
    assert statuses.count(201) == 4, statuses  # the burst across both, not twice it
    assert statuses[:4] == [201] * 4 and set(statuses[4:]) == {429}
    assert [await send(session, w.url, bearer("bob")) for w in writers] == [201, 201]  # bob has his own
    stored = [len(await all_seqs(session, w.url, "v1")) for w in writers]
    assert sum(stored) == 6


async def test_the_broker_redis_is_used_and_keys_expire(start_server: StartServer, redis_server: RedisProcess,
                                                        session: aiohttp.ClientSession) -> None:
    base = await start_server(broker=redis_server.url, auth_jwt_secret=SECRET, rate_limit_per_s=1.0, rate_limit_burst=5)
    assert await send(session, base, bearer("ana")) == 201
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
    assert await send(session, base, bearer("ana")) == 201
    redis_server.stop()
    assert [await send(session, base, bearer("ana")) for _ in range(3)] == [201] * 3  # open: not limited
    assert await metric(session, base, ERRORS + '{outcome="allowed"}') == 3
    redis_server.start()  # empty, same port: the script is loaded again, the limit is back
    statuses = [await send(session, base, bearer("ana")) for _ in range(3)]
    assert statuses == [201, 201, 429]


async def test_an_outage_fails_closed_when_configured(start_server: StartServer, redis_server: RedisProcess,
                                                      session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET, rate_limit_redis=redis_server.url, rate_limit_fail_open=False,
                              rate_limit_per_s=1.0)
    redis_server.stop()
    async with asyncio.timeout(5):
        async with session.post(f"{base}/v1/videos/v1/comments", json={"text": "hi"}, headers=bearer("ana")) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "1"
            assert (await r.json())["error"]["code"] == "rate_limit_unavailable"
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
    assert await send(session, base, bearer("ana")) == 503  # what the balancer is told is what posts get
    redis_server.start()
    assert await readyz(session, base) == (200, {"status": "ready"})
    assert await send(session, base, bearer("ana")) == 201


async def test_readyz_stays_ready_while_fail_open_limits_let_posts_through(
    start_server: StartServer, redis_server: RedisProcess, session: aiohttp.ClientSession,
) -> None:
    base = await start_server(auth_jwt_secret=SECRET, rate_limit_redis=redis_server.url, rate_limit_per_s=1.0)
    redis_server.stop()
    assert await readyz(session, base) == (200, {"status": "ready"})
    assert await send(session, base, bearer("ana")) == 201
