"""A writer's cache of post policies: whether a user may post to a video, without a storage read
per post.

Every post passes a ban check and a slow-mode lookup (Moderation.post_policy); on a loaded writer
that read was the largest cost of a post after aiohttp's own. This keeps what it answered per
(video, user), and stays correct across writers through the storage's moderation generation, a
number every ban, unban and slow-mode change raises once it is stored (in its transaction on
SQLite and PostgreSQL; right after it on DynamoDB):

- Every POLL_INTERVAL (0.25 s) one tiny read of the generation, whatever the post rate; when it
  moved, the cache is dropped. A writer's own bans and settings drop it at once (`drop`).
- The cache answers only while the last generation read that succeeded started less than
  FRESH_FOR (1 s) ago. So **a ban, or slow mode turned on or made longer, on any writer takes effect
  on every writer within 1 s** of its commit: a cached answer served later came from a read that
  started after the change, or was dropped by a generation read that did. Reads still under way
  when the cache is dropped are not kept (the epoch).
- What can only be stale toward refusing is never served from here: a ban found is not cached
  (each post of a banned user reads storage, which decides by its own clock when the ban ends, so
  an unban or an expiry counts at once), and a slow-mode refusal built on a cached interval is
  re-read from storage before the post is refused (an interval lowered or lifted counts at once).
  The slow-mode slot itself is always claimed in storage: that claim is the cross-writer guarantee.
- Storage unreachable: the generation reads fail, the cache stops answering FRESH_FOR after the
  last good one, and posts read storage and fail as they did without a cache. No stale "not
  banned" is ever served past the bound, whatever the storage does.
- Age: the whole cache is dropped every MAX_AGE (30 s) whatever the generation says. That bounds
  the one case the generation misses: on DynamoDB the bump follows the change (no transaction),
  so a writer that fails or dies between the two leaves a change with the number unmoved (the
  moderator got an error and may retry, which bumps it).
- Size: at most MAX_ENTRIES (video, user) pairs; a full cache is dropped whole.

Framework-free: the HTTP edge (edge/moderation.py) holds one per writer process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NamedTuple

from livecomments.storage.base import Moderation

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25  # seconds between reads of the moderation generation
FRESH_FOR = 1.0  # the bound: the cache answers only this long after a generation read started
MAX_AGE = 30.0  # seconds an entry may live, whatever the generation says
MAX_ENTRIES = 65_536


class Policy(NamedTuple):
    banned_until: float | None  # None: not banned
    slow_mode_s: int  # 0: slow mode off
    cached: bool  # answered from the cache, not read now


class PolicyCache:
    """Post policies of one writer process, over its storage; `run()` is its generation poll.
    A post asks `cached` first (no await) and, when it answers None, `read`."""

    def __init__(self, storage: Moderation, *, fresh_for: float = FRESH_FOR, interval: float = POLL_INTERVAL,
                 max_entries: int = MAX_ENTRIES) -> None:
        self._storage = storage
        self._fresh_for, self._interval, self._max_entries = fresh_for, interval, max_entries
        self._entries: dict[tuple[str, str | None], int] = {}  # (video, user) -> slow_mode_s, not banned
        self._generation: int | None = None  # as last read; None before the first read
        self._fresh_at = float("-inf")  # monotonic start of the last generation read that succeeded
        self._epoch = 0  # raised by every drop: a read begun before it is not kept
        self._dropped_at = time.monotonic()

    def cached(self, video_id: str, user: str | None) -> int | None:
        """The video's slow_mode_s for a user known not banned, while the cache is fresh; else None."""
        if time.monotonic() - self._fresh_at < self._fresh_for:
            return self._entries.get((video_id, user))
        return None

    async def read(self, video_id: str, user: str | None) -> Policy:
        """From storage, now; kept for the next posts unless it is a ban or the cache was dropped meanwhile."""
        epoch = self._epoch
        banned_until, slow_mode_s = await self._storage.post_policy(video_id, user)
        if banned_until is None and epoch == self._epoch:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[(video_id, user)] = slow_mode_s
        return Policy(banned_until, slow_mode_s, False)

    def drop(self) -> None:
        """Forget every entry (this writer changed a ban or a setting, or the generation moved)."""
        self._entries.clear()
        self._epoch += 1
        self._dropped_at = time.monotonic()

    async def poll(self) -> None:
        """One generation read; drops the cache when the number moved, or MAX_AGE after the last drop.
        Raises what the storage raises, or TimeoutError."""
        started = time.monotonic()
        async with asyncio.timeout(self._fresh_for):  # a later answer could not make the cache fresh anyway
            generation = await self._storage.moderation_generation()
        if generation != self._generation or started - self._dropped_at >= MAX_AGE:
            self._generation = generation
            self.drop()
        self._fresh_at = started

    async def run(self) -> None:
        """Poll every `interval` until cancelled; a failing storage is said once, and once when it is back."""
        failing = False
        while True:
            started = time.monotonic()
            try:
                await self.poll()
            except Exception as e:  # StorageError, TimeoutError, a driver's own: the loop must not end
                if not failing:
                    log.warning("cannot read the moderation generation (%s): bans and slow mode are read from "
                                "storage on every post until it answers", e or type(e).__name__)
                failing = True
            else:
                if failing:
                    log.info("moderation generation readable again: post policies cached")
                failing = False
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))
