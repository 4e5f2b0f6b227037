"""Redis registry: one lease per process in a sorted set, video -> members in plain sets.

Keys (one Redis, not a cluster: the scripts touch keys they compute):
  lc:reg:leases        ZSET member -> lease expiry (ms, Redis' own clock, so hosts' clocks never matter)
  lc:reg:v:{video}     SET of members serving the video
  lc:reg:s:{member}    SET of the member's videos, so a dead member can be swept
  lc:reg:changes       pub/sub channel carrying the video_id of every change
A member is "<nonce> <url>": a restarted server is a new member, so sweeping the old one
can never remove the new one's registrations.

The heartbeat (every ttl/3, one task per process) renews our lease and sweeps members whose
lease ran out, publishing a change for each of their videos: writers stop pushing to a
killed server within about ttl + ttl/3. Lookups also skip members with an expired lease.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecomments.registry.base import OnChange, OnReset

log = logging.getLogger(__name__)

LEASES = "lc:reg:leases"
CHANNEL = "lc:reg:changes"

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# Removes every member whose lease ran out and announces each of its videos.
_SWEEP = """
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  for _, v in ipairs(redis.call('SMEMBERS', 'lc:reg:s:' .. m)) do
    redis.call('SREM', 'lc:reg:v:' .. v, m)
    redis.call('PUBLISH', KEYS[2], v)
  end
  redis.call('DEL', 'lc:reg:s:' .. m)
  redis.call('ZREM', KEYS[1], m)
end
"""
# ARGV: member ('' for a process that only sweeps), ttl_ms. Returns 1 if our lease had lapsed.
HEARTBEAT = _NOW + """
local lost = 0
if ARGV[1] ~= '' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if (not s) or tonumber(s) <= now then lost = 1 end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
end
""" + _SWEEP + """
return lost
"""
# ARGV: member, op ('+' or '-'), videos...
CHANGE = """
for i = 3, #ARGV do
  if ARGV[2] == '+' then
    redis.call('SADD', 'lc:reg:v:' .. ARGV[i], ARGV[1])
    redis.call('SADD', 'lc:reg:s:' .. ARGV[1], ARGV[i])
  else
    redis.call('SREM', 'lc:reg:v:' .. ARGV[i], ARGV[1])
    redis.call('SREM', 'lc:reg:s:' .. ARGV[1], ARGV[i])
  end
  redis.call('PUBLISH', KEYS[1], ARGV[i])
end
"""
# ARGV: video. Returns the members whose lease is live. One that lapsed is swept right
# away, so no process ever sees a server gone without every writer being told.
LOOKUP = _NOW + """
local out = {}
local lapsed = false
for _, m in ipairs(redis.call('SMEMBERS', 'lc:reg:v:' .. ARGV[1])) do
  local s = redis.call('ZSCORE', KEYS[1], m)
  if s and tonumber(s) > now then table.insert(out, m) else lapsed = true end
end
if lapsed then
""" + _SWEEP + """
end
return out
"""


class RedisRegistry:
    def __init__(self, url: str, self_url: str, ttl: float) -> None:
        self._redis = aioredis.from_url(url, socket_timeout=max(1.0, ttl / 3), socket_connect_timeout=1.0)
        self._member = f"{secrets.token_hex(6)} {self_url}"
        self._ttl = ttl
        self._videos: set[str] = set()
        self._registers = False  # a member only once it registered something
        self._lease_until = 0.0  # monotonic; the lease is ours until then
        self._feed_up = True
        self._restoring = False  # the lease lapsed and our videos are not back yet
        self._reason = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._heartbeat = self._redis.register_script(HEARTBEAT)
        self._change = self._redis.register_script(CHANGE)
        self._lookup = self._redis.register_script(LOOKUP)

    @property
    def ready(self) -> bool:
        return self._feed_up and not self._restoring and time.monotonic() < self._lease_until

    @property
    def not_ready_reason(self) -> str:
        return self._reason or "registry lease lost"

    async def start(self, on_change: OnChange | None, on_reset: OnReset) -> None:
        await self._beat()  # raises at start if Redis is unreachable: refused, not discovered later
        self._tasks.append(asyncio.create_task(self._beat_forever(on_reset)))
        if on_change is not None:
            self._feed_up = False
            subscribed = asyncio.get_running_loop().create_future()
            self._tasks.append(asyncio.create_task(self._listen(on_change, subscribed)))
            async with asyncio.timeout(max(2.0, self._ttl)):
                await subscribed

    async def _beat(self) -> bool:
        member = self._member if self._registers else ""
        started = time.monotonic()
        lost = await self._heartbeat(keys=[LEASES, CHANNEL], args=[member, int(self._ttl * 1000)])
        self._lease_until = started + self._ttl
        return bool(lost) and bool(self._videos)

    async def _beat_forever(self, on_reset: OnReset) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                if await self._beat():
                    self._restoring = True
                if self._restoring and self._videos:
                    # Writers may have swept us: put every video back, then let the hub repair.
                    await self._change(keys=[CHANNEL], args=[self._member, "+", *self._videos])
                    log.warning("registry lease was lost; re-registered %d videos", len(self._videos))
                    on_reset()
                self._restoring, self._reason = False, ""
            except (RedisError, OSError) as e:
                self._reason = f"registry heartbeat failed: {e}"
                log.warning("%s", self._reason)

    async def _listen(self, on_change: OnChange, subscribed: asyncio.Future[None]) -> None:
        """The change feed. After each (re)subscription, on_change(None): changes made while
        we were away are not replayed by pub/sub."""
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                while (await pubsub.get_message(timeout=5.0) or {}).get("type") != "subscribe":
                    pass
                self._feed_up, delay = True, 0.1
                on_change(None)
                if not subscribed.done():
                    subscribed.set_result(None)
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if msg is not None:
                        on_change(msg["data"].decode())
            except (RedisError, OSError) as e:
                self._feed_up = False
                self._reason = f"registry change feed lost: {e}"
                log.warning("%s", self._reason)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def register(self, video_id: str) -> None:
        if not self._registers:
            self._registers = True
            await self._beat()
        await self._change(keys=[CHANNEL], args=[self._member, "+", video_id])
        self._videos.add(video_id)

    async def deregister(self, video_id: str) -> None:
        self._videos.discard(video_id)
        await self._change(keys=[CHANNEL], args=[self._member, "-", video_id])

    async def lookup(self, video_id: str) -> frozenset[str]:
        members = await self._lookup(keys=[LEASES, CHANNEL], args=[video_id])
        return frozenset(m.decode().partition(" ")[2] for m in members)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._videos:  # a clean stop need not wait for the lease to run out
            try:
                await self._change(keys=[CHANNEL], args=[self._member, "-", *self._videos])
            except (RedisError, OSError) as e:
                log.warning("deregistering at close failed: %s", e)
        await self._redis.aclose()
