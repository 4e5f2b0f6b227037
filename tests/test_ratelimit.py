"""Rate limits on posting, in-process: per user, per client address, Retry-After, nothing stored."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from livecomments.addresses import address_key
from livecomments.config import ConfigError
from livecomments.edge.ratelimit import LocalBuckets
from tests.conftest import StartServer, make_config
from tests.helpers import all_seqs, metric
from tests.sse import open_stream

SECRET = "a-test-secret-of-at-least-32-bytes!"
SLOW = {"rate_limit_per_s": 0.05, "rate_limit_burst": 3}  # a token back every 20 s: none during a test


def bearer(sub: str) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def send(session: aiohttp.ClientSession, base: str, text: str, headers: dict[str, str],
               video: str = "v1") -> aiohttp.ClientResponse:
    async with session.post(f"{base}/v1/videos/{video}/comments", json={"text": text, "author": "x"},
                            headers=headers) as r:
        await r.read()
        return r


async def test_a_user_gets_burst_posts_then_429_with_retry_after(start_server: StartServer,
                                                                session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET, **SLOW)
    viewer = await open_stream(session, base, "v1")
    for i in range(3):
        assert (await send(session, base, f"ana {i}", bearer("ana"))).status == 201
    refused = await send(session, base, "ana 3", bearer("ana"))
    assert refused.status == 429
    body = await refused.json()
    assert body["error"]["code"] == "rate_limited"
    retry_after = refused.headers["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 20
    # Another user has a bucket of their own; the refused post was neither stored nor published.
    assert (await send(session, base, "bob 0", bearer("bob"))).status == 201
    assert [c["text"] for c in await viewer.comments(4)] == ["ana 0", "ana 1", "ana 2", "bob 0"]
    assert await all_seqs(session, base, "v1") == [1, 2, 3, 4]
    assert await metric(session, base, 'livecomments_comments_rejected_total{code="rate_limited"}') == 1


async def test_the_limit_is_per_user_across_videos(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET, **SLOW)
    for video in ("v1", "v2", "v3"):
        assert (await send(session, base, "hi", bearer("ana"), video)).status == 201
    assert (await send(session, base, "hi", bearer("ana"), "v4")).status == 429


async def test_tokens_come_back_at_the_rate(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET, rate_limit_per_s=20.0, rate_limit_burst=1)
    assert (await send(session, base, "1", bearer("ana"))).status == 201
    refused = await send(session, base, "2", bearer("ana"))
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"  # 50 ms rounds up, never to 0
    await asyncio.sleep(0.06)  # the refill is the thing under test: a clock, not an event
    assert (await send(session, base, "3", bearer("ana"))).status == 201


XFF = "X-Forwarded-For"


async def test_anonymous_clients_are_limited_per_address_behind_a_trusted_proxy(
    start_server: StartServer, session: aiohttp.ClientSession,
) -> None:
    base = await start_server(trusted_proxies=("127.0.0.1",), **SLOW)
    # What the client wrote itself (the left part) changes nothing: the proxy's entry (right) counts.
    for spoof in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
        assert (await send(session, base, "hi", {XFF: f"{spoof}, 203.0.113.7"})).status == 201
    assert (await send(session, base, "hi", {XFF: "4.4.4.4, 203.0.113.7"})).status == 429
    assert (await send(session, base, "hi", {XFF: "203.0.113.8"})).status == 201


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(start_server: StartServer,
                                                                 session: aiohttp.ClientSession) -> None:
    # The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-For is not believed, so every
    # post counts against 127.0.0.1, whatever address each one claims.
    base = await start_server(trusted_proxies=("10.0.0.0/8",), **SLOW)
    claimed = [f"203.0.113.{i}" for i in range(4)]
    assert [(await send(session, base, "hi", {XFF: a})).status for a in claimed] == [201, 201, 201, 429]


async def test_an_anonymous_client_on_loopback_is_limited_like_any_other(start_server: StartServer,
                                                                         session: aiohttp.ClientSession) -> None:
    base = await start_server(**SLOW)
    assert [(await send(session, base, f"c{i}", {})).status for i in range(4)] == [201, 201, 201, 429]


async def test_zero_turns_limits_off(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET, rate_limit_per_s=0.0, rate_limit_burst=3)
    for i in range(8):
        assert (await send(session, base, str(i), bearer("ana"))).status == 201


async def test_a_bad_token_is_refused_before_the_rate_limit(start_server: StartServer,
                                                            session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET, rate_limit_per_s=0.05, rate_limit_burst=1)
    for _ in range(3):
        assert (await send(session, base, "hi", {"Authorization": "Bearer nope"})).status == 401
    assert (await send(session, base, "hi", bearer("ana"))).status == 201


def test_limit_configuration(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="must be >= 0"):
        make_config(tmp_path, rate_limit_per_s=-1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="trusted_proxies"):
        make_config(tmp_path, trusted_proxies=("nginx",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rate_limit_redis"):
        make_config(tmp_path, rate_limit_redis="memcached://x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ipv6_prefix"):
        make_config(tmp_path, ipv6_prefix=129)  # type: ignore[arg-type]


async def test_idle_buckets_are_evicted_and_memory_is_bounded() -> None:
    now = [0.0]
    buckets = LocalBuckets(1.0, 5, max_keys=100, clock=lambda: now[0])
    for i in range(50):
        assert await buckets.take(f"a{i}") == 0
    assert len(buckets) == 50
    now[0] = 5.0  # 5 tokens at 1/s: every bucket is full again, the same as no bucket
    assert await buckets.take("b") == 0
    assert len(buckets) == 1
    for i in range(1000):  # a flood of distinct keys within the refill time
        await buckets.take(f"c{i}")
    assert len(buckets) == 100
    for _ in range(5):
        await buckets.take("d")
    assert await buckets.take("d") == pytest.approx(1.0)  # empty: one token is a second away


async def test_addresses_of_one_ipv6_network_share_one_bucket(start_server: StartServer,
                                                              session: aiohttp.ClientSession) -> None:
    # An IPv6 subscriber picks addresses from its /64 at will: keyed per /128 it had a bucket per address.
    base = await start_server(trusted_proxies=("127.0.0.1",), **SLOW)
    same_64 = ["2001:db8:0:1::1", "2001:db8:0:1::2", "2001:DB8:0:1:ffff::9", "2001:db8:0:1:abcd::4"]
    assert [(await send(session, base, "hi", {XFF: a})).status for a in same_64] == [201, 201, 201, 429]
    assert (await send(session, base, "hi", {XFF: "2001:db8:0:2::1"})).status == 201  # the next /64 is another client


async def test_ipv6_prefix_128_keys_each_address(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server(trusted_proxies=("127.0.0.1",), ipv6_prefix=128, **SLOW)
    assert [(await send(session, base, "hi", {XFF: f"2001:db8::{i}"})).status for i in range(1, 6)] == [201] * 5


async def test_the_text_forms_of_one_ipv4_client_share_one_bucket(start_server: StartServer,
                                                                   session: aiohttp.ClientSession) -> None:
    base = await start_server(trusted_proxies=("127.0.0.1",), **SLOW)
    forms = ["10.8.8.8", "::ffff:10.8.8.8", "::FFFF:a08:808", "10.8.8.8"]
    assert [(await send(session, base, "hi", {XFF: a})).status for a in forms] == [201, 201, 201, 429]
    assert (await send(session, base, "hi", {XFF: "10.8.8.9"})).status == 201


@pytest.mark.parametrize(("text", "prefix", "key"), [
    ("10.8.8.8", 64, "10.8.8.8"),
    ("::ffff:10.8.8.8", 64, "10.8.8.8"),
    ("::ffff:a08:808", 128, "10.8.8.8"),
    ("2001:DB8:0:0:1::7", 64, "2001:db8::/64"),
    ("2001:db8:0:0:1::7", 128, "2001:db8::1:0:0:7"),
    ("2001:db8:aa:bb::1", 48, "2001:db8:aa::/48"),
    ("fe80::1%eth0", 128, "fe80::1"),
    ("not-an-address", 64, "not-an-address"),
])
def test_address_keys(text: str, prefix: int, key: str) -> None:
    assert address_key(text, prefix) == key


async def test_slow_mode_keys_an_anonymous_poster_like_the_rate_limits(start_server: StartServer, tmp_path: Path,
                                                                       session: aiohttp.ClientSession) -> None:
    # Slow mode is set by a moderator (a writer with a key); anonymous posts come to an open writer on the same database.
    db = f"sqlite:///{tmp_path}/shared.db"
    moderated = await start_server(storage=db, auth_jwt_secret=SECRET)
    open_writer = await start_server(storage=db, trusted_proxies=("127.0.0.1",))
    moderator = jwt.encode({"sub": "mod", "roles": ["moderator"], "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    async with session.put(f"{moderated}/v1/videos/v1/settings", json={"slow_mode_s": 600},
                           headers={"Authorization": f"Bearer {moderator}"}) as r:
        assert r.status == 200, await r.text()
    posters = ["2001:db8:0:1::1", "2001:db8:0:1::2", "10.8.8.8", "::ffff:a08:808", "2001:db8:0:2::1"]
    statuses = [(await send(session, open_writer, "hi", {XFF: a})) for a in posters]
    assert [r.status for r in statuses] == [201, 429, 201, 429, 201]
    assert all(r.headers.get("Retry-After") for r in statuses if r.status == 429)
    assert await all_seqs(session, open_writer, "v1") == [1, 2, 3]
