"""Redis registry: one lease per process in a sorted set, video -> members in plain sets.

Keys (one Redis, not a cluster: the scripts touch keys they compute):
  lc:reg:leases        ZSET member -> lease expiry (ms, Redis' own clock, so hosts' clocks never matter)
  lc:reg:v:{video}     SET of members serving the video
  lc:reg:s:{member}    SET of the member's videos, so a dead member can be swept
  lc:reg:changes       pub/sub channel carrying the video_id of every change
  lc:reg:n:{video}     HASH member -> its viewers of the video (counted only while its lease lives)
A member is "<nonce> <url>": a restarted server is a new member, so sweeping the old one
can never remove the new one's registrations.

The heartbeat (registry/lease.py: every ttl/3, one task per process) renews our lease and sweeps members whose
lease ran out, publishing a change for each of their videos: writers stop pushing to a
killed server within about ttl + ttl/3. Lookups also skip members with an expired lease.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecomments.registry.base import OnChange
from livecomments.registry.lease import LeasedRegistry

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
    redis.call('HDEL', 'lc:reg:n:' .. v, m)
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
    redis.call('HDEL', 'lc:reg:n:' .. ARGV[i], ARGV[1])
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

# ARGV: member, then video, count pairs (count '0': none there any more).
PUT_COUNTS = """
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] == '0' then
    redis.call('HDEL', 'lc:reg:n:' .. ARGV[i], ARGV[1])
  else
    redis.call('HSET', 'lc:reg:n:' .. ARGV[i], ARGV[1], ARGV[i + 1])
  end
end
"""
# ARGV: member to leave out ('' for none), videos... Returns each video's count summed over live leases.
COUNTS = _NOW + """
local out = {}
for i = 2, #ARGV do
  local total = 0
  local kv = redis.call('HGETALL', 'lc:reg:n:' .. ARGV[i])
  for j = 1, #kv, 2 do
    if kv[j] ~= ARGV[1] then
      local s = redis.call('ZSCORE', KEYS[1], kv[j])
      if s and tonumber(s) > now then total = total + tonumber(kv[j + 1]) end
    end
  end
  out[i - 1] = total
end
return out
"""


class RedisRegistry(LeasedRegistry):
    errors = (RedisError, OSError)

    def __init__(self, url: str, self_url: str, ttl: float) -> None:
        super().__init__(url, ttl)
        self._redis = aioredis.from_url(url, socket_timeout=max(1.0, ttl / 3), socket_connect_timeout=1.0)
        self._member = f"{secrets.token_hex(6)} {self_url}"
        self._registers = False  # a member only once it registered something
        self._heartbeat = self._redis.register_script(HEARTBEAT)
        self._change = self._redis.register_script(CHANGE)
        self._lookup = self._redis.register_script(LOOKUP)
        self._put_counts = self._redis.register_script(PUT_COUNTS)
        self._counts = self._redis.register_script(COUNTS)

    async def _open(self) -> None:
        await self._renew()  # raises at start if Redis is unreachable: refused, not discovered later

    async def _renew(self) -> bool:
        member = self._member if self._registers else ""
        lost = await self._heartbeat(keys=[LEASES, CHANNEL], args=[member, int(self._ttl * 1000)])
        return bool(lost)  # writers may have swept us: our videos must go back

    async def _restore(self, videos: list[str]) -> None:
        await self._change(keys=[CHANNEL], args=[self._member, "+", *videos])

    async def _feed(self, on_change: OnChange, started: Callable[[], None]) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(CHANNEL)
            while (await pubsub.get_message(timeout=5.0) or {}).get("type") != "subscribe":
                pass
            started()
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                if msg is not None:
                    on_change(msg["data"].decode())
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    async def register(self, video_id: str) -> None:
        if not self._registers:
            self._registers = True
            await self._renew()
        await self._change(keys=[CHANNEL], args=[self._member, "+", video_id])
        self._videos.add(video_id)

    async def deregister(self, video_id: str) -> None:
        self._videos.discard(video_id)
        await self._change(keys=[CHANNEL], args=[self._member, "-", video_id])

    async def lookup(self, video_id: str) -> frozenset[str]:
        members = await self._lookup(keys=[LEASES, CHANNEL], args=[video_id])
        return frozenset(m.decode().partition(" ")[2] for m in members)

    async def put_counts(self, counts: dict[str, int]) -> None:
        args: list[str | int] = [self._member]
        for video_id, n in counts.items():
            args += [video_id, n]
        await self._put_counts(args=args)

    async def counts(self, video_ids: list[str], *, others: bool) -> dict[str, int]:
        totals = await self._counts(keys=[LEASES], args=[self._member if others else "", *video_ids])
        return dict(zip(video_ids, (int(n) for n in totals), strict=True))

    async def _release(self) -> None:
        """A clean stop need not wait for the lease to run out. The lease goes only once the routes
        did: the sweep finds stale routes through the leases, so a lease dropped alone would leave
        them for ever; kept, it expires and the sweep removes both."""
        try:
            if self._videos:
                await self._change(keys=[CHANNEL], args=[self._member, "-", *self._videos])
            await self._redis.zrem(LEASES, self._member)  # our viewer counts stop counting now
        except (RedisError, OSError) as e:
            log.warning("deregistering at close failed (the lease will expire): %s", e)
        await self._redis.aclose()
