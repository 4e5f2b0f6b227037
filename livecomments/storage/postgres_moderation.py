"""PostgreSQL side of moderation: deletes in the video's log, bans, slow mode.

A delete entry takes its seq by bumping the video's `heads` row first, the lock every
post of the video takes too, so its seq is contiguous with theirs across writers, and a
refused delete rolls the bump back. Mixed into PostgresStorage.

Every time compared or stored here is the database server's clock (DB_NOW, inside the
statement that decides), never the writer's: writers on several machines disagree about the
time, and a writer 60 s ahead would otherwise take a slow-mode slot 1 s after another
writer's post, not see a 45 s ban, or forget a ban a minute early. The bound is then the
database's own clock; the writers' clocks do not matter.
"""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]

from livecomments.model import Comment
from livecomments.storage.base import MAX_SLOW_MODE_S
from livecomments.storage.errors import NoSuchComment, NotYourComment
from livecomments.storage.pg_errors import translated

MODERATION_SCHEMA = """
ALTER TABLE comments ADD COLUMN IF NOT EXISTS user_id TEXT;
ALTER TABLE comments ADD COLUMN IF NOT EXISTS deletes BIGINT;
ALTER TABLE comments ADD COLUMN IF NOT EXISTS deleted BOOLEAN NOT NULL DEFAULT FALSE;
-- The shown comments of each user, for erase_user; partial, so deleted comments leave it.
CREATE INDEX IF NOT EXISTS comments_by_user ON comments (user_id, video_id, seq) WHERE deletes IS NULL AND NOT deleted;
CREATE TABLE IF NOT EXISTS bans (
    video_id TEXT             NOT NULL,
    user_id  TEXT             NOT NULL,
    until    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (video_id, user_id)
);
CREATE TABLE IF NOT EXISTS video_settings (video_id TEXT PRIMARY KEY, slow_mode_s INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS moderation_generation (one INTEGER PRIMARY KEY CHECK (one = 1), n BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS last_posts (
    video_id TEXT             NOT NULL,
    poster   TEXT             NOT NULL,
    at       DOUBLE PRECISION NOT NULL,
    idem_key TEXT,  -- the Idempotency-Key of the post that took the slot: its retry takes it again
    PRIMARY KEY (video_id, poster)
);
"""
DB_NOW = "extract(epoch FROM statement_timestamp())::float8"  # the server's clock, one value per statement
POLICY = f"""
SELECT (SELECT until FROM bans WHERE video_id=$1 AND user_id=$2 AND until>{DB_NOW}),
       (SELECT slow_mode_s FROM video_settings WHERE video_id=$1)
"""
# The row lock makes a concurrent claim by another writer wait, then re-check the condition.
CLAIM = f"""
INSERT INTO last_posts (video_id, poster, at, idem_key) VALUES ($1, $2, {DB_NOW}, $4)
ON CONFLICT (video_id, poster) DO UPDATE
SET at = CASE WHEN last_posts.idem_key = EXCLUDED.idem_key THEN last_posts.at ELSE EXCLUDED.at END,
    idem_key = EXCLUDED.idem_key
WHERE last_posts.at <= EXCLUDED.at - $3 OR last_posts.idem_key = EXCLUDED.idem_key
RETURNING at
"""
WAIT = f"SELECT at + $3 - {DB_NOW} FROM last_posts WHERE video_id=$1 AND poster=$2"
BY_USER = """
SELECT video_id, seq FROM comments WHERE user_id=$1 AND deletes IS NULL AND NOT deleted
ORDER BY user_id, video_id, seq LIMIT $2
"""
# After the head row is locked: the seqs still shown (another delete may have come first).
STILL_SHOWN = """
SELECT seq FROM comments WHERE video_id=$1 AND seq = ANY($2::bigint[]) AND deletes IS NULL AND NOT deleted ORDER BY seq
"""
APPEND_DELETES = f"""
INSERT INTO comments (video_id, seq, author, text, created_at, user_id, deletes)
SELECT $1, h, '', '', {DB_NOW}, $2, d FROM unnest($3::bigint[], $4::bigint[]) AS t(h, d)
RETURNING seq, created_at, deletes
"""
# Raised in the transaction of every ban, unban and slow-mode change (Moderation.moderation_generation).
BUMP = """
INSERT INTO moderation_generation VALUES (1, 1) ON CONFLICT (one) DO UPDATE SET n = moderation_generation.n + 1
"""
BAN = f"""
INSERT INTO bans VALUES ($1, $2, {DB_NOW} + $3) ON CONFLICT (video_id, user_id) DO UPDATE SET until=EXCLUDED.until
RETURNING until
"""


class _AlreadyDeleted(Exception):
    """Rolls back the head bump of a delete that finds nothing left to delete."""


class PostgresModeration:
    _pool: asyncpg.Pool

    async def delete(self, video_id: str, seq: int, *, by: str, moderator: bool) -> Comment | None:
        try:
            async with translated(), self._pool.acquire() as conn, conn.transaction():
                return await _delete(conn, video_id, seq, by, moderator)
        except _AlreadyDeleted:
            return None

    async def erase_user(self, user: str, *, by: str, limit: int) -> tuple[list[Comment], bool]:
        """One transaction per video: it takes that video's head lock only, as a single delete
        does, so it never waits in a circle with a batch of posts (they lock heads in order)."""
        async with translated():
            found = await self._pool.fetch(BY_USER, user, limit + 1)
        videos: dict[str, list[int]] = {}
        for row in found[:limit]:
            videos.setdefault(row[0], []).append(int(row[1]))
        entries: list[Comment] = []
        for video_id, seqs in videos.items():
            async with translated(), self._pool.acquire() as conn, conn.transaction():
                entries += await _erase_from(conn, video_id, seqs, by)
        return entries, len(found) <= limit

    async def ban(self, video_id: str, user: str, ttl_s: float) -> float | None:
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(BUMP)
            if ttl_s <= 0:
                await conn.execute("DELETE FROM bans WHERE video_id=$1 AND user_id=$2", video_id, user)
                return None
            return float(await conn.fetchval(BAN, video_id, user, float(ttl_s)))

    async def post_policy(self, video_id: str, user: str | None, _now: float | None = None) -> tuple[float | None, int]:
        async with translated():
            row = await self._pool.fetchrow(POLICY, video_id, user)
        return row[0], row[1] or 0

    async def set_slow_mode(self, video_id: str, seconds: int) -> None:
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(BUMP)
            await conn.execute(
                "INSERT INTO video_settings VALUES ($1, $2) "
                "ON CONFLICT (video_id) DO UPDATE SET slow_mode_s=EXCLUDED.slow_mode_s", video_id, seconds,
            )

    async def moderation_generation(self) -> int:
        async with translated():
            return int(await self._pool.fetchval("SELECT n FROM moderation_generation") or 0)

    async def forget_expired(self) -> None:
        async with translated():
            await self._pool.execute(f"DELETE FROM bans WHERE until <= {DB_NOW}")
            await self._pool.execute(f"DELETE FROM last_posts WHERE at < {DB_NOW} - $1", float(MAX_SLOW_MODE_S))

    async def claim_slot(self, video_id: str, poster: str, interval: int, key: str | None = None) -> float:
        async with translated():
            if await self._pool.fetchval(CLAIM, video_id, poster, float(interval), key) is not None:
                return 0.0
            wait = await self._pool.fetchval(WAIT, video_id, poster, float(interval))
        return max(0.001, float(wait or 0.0))  # None: forgotten meanwhile, retry at once


async def _delete(conn: Any, video_id: str, seq: int, by: str, moderator: bool) -> Comment:
    head = await conn.fetchval("UPDATE heads SET seq = seq + 1 WHERE video_id=$1 RETURNING seq", video_id)
    row = await conn.fetchrow("SELECT user_id, deletes, deleted FROM comments WHERE video_id=$1 AND seq=$2", video_id, seq)
    if head is None or row is None or row[1] is not None:
        raise NoSuchComment(f"{video_id} has no comment {seq}")
    if not moderator and row[0] != by:
        raise NotYourComment(f"comment {seq} of {video_id} is someone else's")
    if row[2]:
        raise _AlreadyDeleted
    created_at = await conn.fetchval(
        "INSERT INTO comments (video_id, seq, author, text, created_at, user_id, deletes) "
        f"VALUES ($1, $2, '', '', {DB_NOW}, $3, $4) RETURNING created_at",
        video_id, head, by, seq,
    )
    entry = Comment(video_id, head, "", "", float(created_at), by, deletes=seq)
    await conn.execute("UPDATE comments SET deleted=TRUE, text='' WHERE video_id=$1 AND seq=$2", video_id, seq)
    return entry


async def _erase_from(conn: Any, video_id: str, seqs: list[int], by: str) -> list[Comment]:
    """Inside a transaction: delete those of `seqs` still shown, their entries at the next seqs."""
    top = await conn.fetchval("SELECT seq FROM heads WHERE video_id=$1 FOR UPDATE", video_id)
    shown = [int(r[0]) for r in await conn.fetch(STILL_SHOWN, video_id, seqs)]
    if top is None or not shown:
        return []
    heads = list(range(top + 1, top + 1 + len(shown)))
    rows = await conn.fetch(APPEND_DELETES, video_id, by, heads, shown)
    await conn.execute("UPDATE comments SET deleted=TRUE, text='' WHERE video_id=$1 AND seq = ANY($2::bigint[])",
                       video_id, shown)
    await conn.execute("UPDATE heads SET seq=$2 WHERE video_id=$1", video_id, heads[-1])
    return sorted((Comment(video_id, int(r[0]), "", "", float(r[1]), by, deletes=int(r[2])) for r in rows),
                  key=lambda c: c.seq)
