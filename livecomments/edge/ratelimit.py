"""Token-bucket rate limits on posting: per user, or per client address when anonymous (its
canonical key: one bucket for every text form of an IPv4 address, and for an IPv6 client's
whole network of `ipv6_prefix` bits; see livecomments/addresses.py).

A bucket holds up to `burst` tokens and refills at `rate` per second; a post takes one once it is
validated (writer.py): one refused as malformed (400, 413, 415, 422) takes none. Such a post costs
the server the reading and parsing of a bounded body and nothing else (no storage, no fan-out),
which the connection caps and timeouts already bound; counting it would let a client's broken
retries use up the burst its real comments need.
In-process by default; shared by every writer through Redis when a Redis URL is configured,
with one Lua script per check (one round trip, atomic, on Redis's clock so the writers'
clocks do not matter). A key idle long enough to be full again is the same as no key: the
in-process table evicts those, Redis expires them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from livecomments.config import mask_url
from livecomments.edge.auth import USER
from livecomments.edge.clientaddr import client_key
from livecomments.edge.keys import CONFIG, METRICS
from livecomments.errors import ApiError, retry_after
from livecomments.metrics import Metrics

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

MAX_LOCAL_KEYS = 100_000  # ~15 MB; past it the least recently used bucket goes (it may not be full yet)
REDIS_TIMEOUT = 0.5  # seconds a check may wait for Redis before failing open or closed
KEY_PREFIX = "lc:rl:"
RATE_LIMIT_UNAVAILABLE = "rate_limit_unavailable"  # the store is down and limits fail closed (posts, /readyz)

# KEYS[1] the bucket; ARGV rate/s, burst. Returns {1 allowed | 0 refused, seconds to wait as a string}
# (Redis truncates Lua numbers to integers on return). TIME in a script is safe: Redis >= 5
# replicates a script's effects, not the script.
TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
if tokens == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - tonumber(state[2])) * rate)
end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RateLimited(ApiError):
    def __init__(self, wait: float) -> None:
        headers = retry_after(wait)
        super().__init__(429, "rate_limited", f"too many posts: retry in {headers['Retry-After']} s", headers)


class BucketsUnavailable(Exception):
    """The shared buckets cannot be reached (Redis down, slow or refusing)."""


class Buckets(Protocol):
    async def take(self, key: str) -> float:
        """Take a token from `key`'s bucket: 0 if taken, else the seconds until one is there."""
        ...

    async def reachable(self) -> bool:
        """Whether a `take` now would reach the buckets (for /readyz; bounded like `take`)."""
        ...


class LocalBuckets:
    """This process's buckets, least recently used first."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = MAX_LOCAL_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._refill = burst / rate  # seconds after which an idle bucket is full again
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    async def reachable(self) -> bool:
        return True

    async def take(self, key: str) -> float:
        now = self._clock()
        self._evict(now)
        tokens, at = self._buckets.pop(key, (float(self._burst), now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self._rate
        self._buckets[key] = (tokens, now)  # to the end: the order is the order of last use
        return wait

    def _evict(self, now: float) -> None:
        # Amortised O(1): each key is evicted once; the oldest are at the front.
        while self._buckets:
            key, (_, at) = next(iter(self._buckets.items()))
            if now - at < self._refill and len(self._buckets) < self._max_keys:
                return
            del self._buckets[key]


class RedisBuckets:
    def __init__(self, client: Redis, rate: float, burst: int) -> None:
        self._client = client
        self._script = client.register_script(TAKE_SCRIPT)  # EVALSHA; EVAL once after a Redis restart
        self._args = (repr(rate), str(burst))

    async def take(self, key: str) -> float:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                allowed, wait = await self._script(keys=[KEY_PREFIX + key], args=self._args)
        except (RedisError, OSError, TimeoutError) as e:
            raise BucketsUnavailable(type(e).__name__) from e
        return 0.0 if int(allowed) else float(wait)

    async def reachable(self) -> bool:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self._client.ping()
        except (RedisError, OSError, TimeoutError):
            return False
        return True


class RateLimiter:
    def __init__(self, buckets: Buckets, metrics: Metrics, *, fail_open: bool) -> None:
        self._buckets = buckets
        self._metrics = metrics
        self._fail_open = fail_open
        self._failing = False

    async def check(self, key: str) -> None:
        """Raises RateLimited when `key` is out of tokens."""
        try:
            wait = await self._buckets.take(key)
        except BucketsUnavailable as e:
            self._on_outage(e)
            return
        if self._failing:
            log.info("rate limits reachable again")
            self._failing = False
        if wait > 0:
            raise RateLimited(wait)

    async def refusing(self) -> bool:
        """Whether posts are refused now whatever their bucket: the buckets are unreachable and
        limits fail closed (/readyz: a writer that refuses every post is not ready)."""
        return not self._fail_open and not await self._buckets.reachable()

    def _on_outage(self, e: BucketsUnavailable) -> None:
        outcome = "allowed" if self._fail_open else "refused"
        self._metrics.rate_limit_errors.labels(outcome).inc()
        if not self._failing:  # one line per outage, not one per post
            log.warning("rate limits unreachable (%s): posts are %s until they are back", e, outcome)
            self._failing = True
        if not self._fail_open:
            raise ApiError(503, RATE_LIMIT_UNAVAILABLE, "rate limits cannot be checked now; nothing was stored",
                           retry_after(1))


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


async def rate_limit_ctx(app: web.Application) -> AsyncIterator[None]:
    """The writer's limiter: Redis-backed when a Redis URL is configured, else in-process; none when off."""
    config = app[CONFIG]
    if not config.rate_limits_on:
        yield
        return
    client = None
    buckets: Buckets
    if config.rate_limit_url:
        from redis.asyncio import Redis

        client = Redis.from_url(config.rate_limit_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
        buckets = RedisBuckets(client, config.rate_limit_per_s, config.rate_limit_burst)
        log.info("rate limits shared through %s", mask_url(config.rate_limit_url))
    else:
        buckets = LocalBuckets(config.rate_limit_per_s, config.rate_limit_burst)
    app[RATE_LIMITER] = RateLimiter(buckets, app[METRICS], fail_open=config.rate_limit_fail_open)
    yield
    if client is not None:
        await client.aclose()


async def limit_post(request: web.Request) -> None:
    """Take a well-formed post's token: the user's, or the client address's when anonymous. Raises RateLimited."""
    limiter = request.app.get(RATE_LIMITER)
    if limiter is None:
        return
    user = request.get(USER)
    if user is not None:
        await limiter.check("u:" + user.sub)
        return
    address = client_key(request)
    # Loopback is an address like any other: a proxy on the same host without trusted_proxies
    # then puts all its clients in one bucket (loudly limited), never in none. Local rigs that
    # post fast (cluster, benchmarks, the test harness) turn limits off with rate_limit_per_s=0.
    if address is None:
        return
    await limiter.check("a:" + address)
