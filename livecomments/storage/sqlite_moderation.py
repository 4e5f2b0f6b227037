"""SQLite side of moderation: deletes in the video's log, bans, slow mode.

Writes run on the storage's one writer thread, so a delete entry takes the next seq
between two group commits, exactly as a comment would. Mixed into SqliteStorage.

Times are this machine's clock, read here (on the writer thread for what is written): every
process of one SQLite file runs on one machine, so they share it (docs/api.md says so).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from livecomments.model import Comment
from livecomments.storage.base import MAX_SLOW_MODE_S
from livecomments.storage.errors import NoSuchComment, NotYourComment
from livecomments.storage.sqlite_tx import immediate

T = TypeVar("T")

# Columns of the comments table that make it a log (added to databases made before them).
LOG_COLUMNS = {
    "user_id": "TEXT",  # the poster's token sub (NULL: posted while posting was open)
    "deletes": "INTEGER",  # set on a delete entry: the seq of the comment it removes
    "deleted": "INTEGER NOT NULL DEFAULT 0",  # 1: a deleted comment; its text is erased
}
MODERATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS bans (
    video_id TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    until    REAL NOT NULL,
    PRIMARY KEY (video_id, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS video_settings (video_id TEXT PRIMARY KEY, slow_mode_s INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS moderation_generation (one INTEGER PRIMARY KEY CHECK (one = 1), n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS last_posts (
    video_id TEXT NOT NULL,
    poster   TEXT NOT NULL,
    at       REAL NOT NULL,
    idem_key TEXT,  -- the Idempotency-Key of the post that took the slot: its retry takes it again
    PRIMARY KEY (video_id, poster)
) WITHOUT ROWID;
"""
# The shown comments of each user: erasing a user (erase_user) reads at most `limit` rows of it.
# Made after LOG_COLUMNS exist (sqlite_file.migrate); partial, so deleted comments leave it, and
# so do anonymous ones (no user to erase): an open writer's insert then updates one index fewer.
# BY_USER's user_id=? implies user_id IS NOT NULL, so SQLite may use it (and must: INDEXED BY).
USER_INDEX_WHERE = "user_id IS NOT NULL AND deletes IS NULL AND deleted = 0"
USER_INDEX = f"CREATE INDEX IF NOT EXISTS comments_by_user ON comments (user_id, video_id, seq) WHERE {USER_INDEX_WHERE}"
BY_USER = (
    "SELECT video_id, seq FROM comments INDEXED BY comments_by_user "
    "WHERE user_id=? AND deletes IS NULL AND deleted = 0 ORDER BY user_id, video_id, seq LIMIT ?"
)
POLICY = """
SELECT (SELECT until FROM bans WHERE video_id=? AND user_id=? AND until>?),
       (SELECT slow_mode_s FROM video_settings WHERE video_id=?)
"""
CLAIM = """
INSERT INTO last_posts (video_id, poster, at, idem_key) VALUES (?, ?, ?, ?)
ON CONFLICT (video_id, poster) DO UPDATE
SET at = CASE WHEN last_posts.idem_key = excluded.idem_key THEN last_posts.at ELSE excluded.at END,
    idem_key = excluded.idem_key
WHERE last_posts.at <= excluded.at - ? OR last_posts.idem_key = excluded.idem_key
"""

# Raised in the transaction of every ban, unban and slow-mode change (Moderation.moderation_generation).
BUMP = "INSERT INTO moderation_generation VALUES (1, 1) ON CONFLICT (one) DO UPDATE SET n = n + 1"


def _bumped(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> None:
    """`sql` and the generation's bump, in one transaction: whoever sees the new number sees the change."""
    with immediate(conn):
        conn.execute(sql, args)
        conn.execute(BUMP)


def _delete(conn: sqlite3.Connection, video_id: str, seq: int, by: str, moderator: bool) -> Comment | None:
    """Runs on the writer thread: one transaction, so the check and the log entry agree."""
    with immediate(conn):
        row = conn.execute(
            "SELECT user_id, deletes, deleted FROM comments WHERE video_id=? AND seq=?", (video_id, seq),
        ).fetchone()
        if row is None or row[1] is not None:
            raise NoSuchComment(f"{video_id} has no comment {seq}")
        if not moderator and row[0] != by:
            raise NotYourComment(f"comment {seq} of {video_id} is someone else's")
        if row[2]:  # deleted before: nothing new to say
            return None
        return _append_delete(conn, video_id, seq, by)


def _append_delete(conn: sqlite3.Connection, video_id: str, seq: int, by: str) -> Comment:
    """Inside the caller's transaction: erase comment `seq` and append its delete entry at the next seq."""
    head = conn.execute("SELECT seq FROM heads WHERE video_id=?", (video_id,)).fetchone()[0] + 1
    entry = Comment(video_id, head, "", "", time.time(), by, deletes=seq)
    conn.execute(
        "INSERT INTO comments (video_id, seq, author, text, created_at, user_id, deletes) VALUES (?, ?, '', '', ?, ?, ?)",
        (video_id, head, entry.created_at, by, seq),
    )
    conn.execute("UPDATE comments SET deleted=1, text='' WHERE video_id=? AND seq=?", (video_id, seq))
    conn.execute("UPDATE heads SET seq=? WHERE video_id=?", (head, video_id))
    return entry


def _erase(conn: sqlite3.Connection, user: str, by: str, limit: int) -> tuple[list[Comment], bool]:
    """Runs on the writer thread, between group commits: one transaction of at most `limit` deletes,
    so a crash leaves all of them or none, and the index hands the next call the rest."""
    with immediate(conn):
        found = conn.execute(BY_USER, (user, limit + 1)).fetchall()
        entries = [_append_delete(conn, video_id, seq, by) for video_id, seq in found[:limit]]
    return entries, len(found) <= limit


def _claim(conn: sqlite3.Connection, video_id: str, poster: str, interval: int, key: str | None) -> float:
    now = time.time()
    if conn.execute(CLAIM, (video_id, poster, now, key, interval)).rowcount:
        return 0.0
    row = conn.execute("SELECT at FROM last_posts WHERE video_id=? AND poster=?", (video_id, poster)).fetchone()
    return max(0.001, float(row[0]) + interval - now)


class SqliteModeration:
    """Uses the storage's writer and reader threads (`_write`, `_read`)."""

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def delete(self, video_id: str, seq: int, *, by: str, moderator: bool) -> Comment | None:
        return await self._write(lambda conn: _delete(conn, video_id, seq, by, moderator))

    async def erase_user(self, user: str, *, by: str, limit: int) -> tuple[list[Comment], bool]:
        return await self._write(lambda conn: _erase(conn, user, by, limit))

    async def ban(self, video_id: str, user: str, ttl_s: float) -> float | None:
        if ttl_s <= 0:
            await self._write(lambda conn: _bumped(conn, "DELETE FROM bans WHERE video_id=? AND user_id=?", (video_id, user)))
            return None
        sql = "INSERT INTO bans VALUES (?, ?, ?) ON CONFLICT (video_id, user_id) DO UPDATE SET until=excluded.until"

        def ban(conn: sqlite3.Connection) -> float:
            until = time.time() + ttl_s
            _bumped(conn, sql, (video_id, user, until))
            return until

        return await self._write(ban)

    async def post_policy(self, video_id: str, user: str | None, _now: float | None = None) -> tuple[float | None, int]:
        rows = await self._read(POLICY, (video_id, user, time.time(), video_id))
        return rows[0][0], rows[0][1] or 0

    async def set_slow_mode(self, video_id: str, seconds: int) -> None:
        sql = "INSERT INTO video_settings VALUES (?, ?) ON CONFLICT (video_id) DO UPDATE SET slow_mode_s=excluded.slow_mode_s"
        await self._write(lambda conn: _bumped(conn, sql, (video_id, seconds)))

    async def moderation_generation(self) -> int:
        rows = await self._read("SELECT n FROM moderation_generation", ())
        return int(rows[0][0]) if rows else 0

    async def forget_expired(self) -> None:
        def forget(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute("DELETE FROM bans WHERE until <= ?", (now,))
            conn.execute("DELETE FROM last_posts WHERE at < ?", (now - MAX_SLOW_MODE_S,))

        await self._write(forget)

    async def claim_slot(self, video_id: str, poster: str, interval: int, key: str | None = None) -> float:
        return await self._write(lambda conn: _claim(conn, video_id, poster, interval, key))
