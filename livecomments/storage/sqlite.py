"""SQLite storage: WAL, seq assigned in the inserting transaction, group commit.

Why not aiosqlite: it hops to its thread once per statement, and a group commit of
64 posts is ~130 statements. Here a whole batch is one function run on one
dedicated writer thread (sqlite_thread.py), i.e. one hop and one fsync per batch. Reads use their own
connection on their own thread, which WAL lets run beside the writer.

Two failures that the connection itself does not report are watched for:

- The file deleted or replaced under the running server. SQLite goes on writing into the
  unlinked inode, so posts would get 201 into a file nobody opens again, and a restart would
  start an empty one (seq from 1). The path's (device, inode) is compared with the one opened,
  before every write batch on the writer thread and at every readiness probe: one stat(2), a
  microsecond against the batch's fsync, and the only place that refuses a post before it is
  acknowledged (a check per health tick alone would let every post between two ticks into the
  lost file). A batch already committing when the file goes is the one that can still land there.
- A full disk. The write lock can still be taken, so the usual probe would say ready while
  every post fails: after a write failed for lack of space, readiness is a real write of a
  post's largest size (committed, then removed) until one succeeds.

Decisions that compare times (slow mode, bans, housekeeping) use this machine's clock, read
here, not a caller's: one machine, one clock (see docs/api.md).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from livecomments.model import Comment, NewComment
from livecomments.storage.base import MAX_PENDING_POSTS, OnCommit, Storage, body_hash, key_outcome
from livecomments.storage.errors import StorageFull, StorageLost, StorageUnavailable
from livecomments.storage.group_commit import GroupCommit, Outcome, Post
from livecomments.storage.log import COLUMNS, LIVE, PREFIXED, row_entry
from livecomments.storage.sqlite_file import connect, identity, migrate, probe, space_probe
from livecomments.storage.sqlite_moderation import SqliteModeration
from livecomments.storage.sqlite_thread import WriterThread
from livecomments.storage.sqlite_tx import immediate

# Retention by count: the entries before a video's Nth newest shown comment (N = the 1st parameter + 1).
# Only a video with an entry at or below head - N can have any (the Nth shown is at most head - N + 1),
# so the others cost one index seek, not a walk down N rows.
OVER_COUNT = """
WITH cut AS (
    SELECT h.video_id, (
        SELECT k.seq FROM comments k WHERE k.video_id = h.video_id AND k.deletes IS NULL AND k.deleted = FALSE
        ORDER BY k.seq DESC LIMIT 1 OFFSET ?
    ) AS cutoff
    FROM heads h WHERE EXISTS (SELECT 1 FROM comments o WHERE o.video_id = h.video_id AND o.seq <= h.seq - ?)
)
SELECT c.video_id, c.seq FROM cut CROSS JOIN comments c ON c.video_id = cut.video_id AND c.seq < cut.cutoff
LIMIT ?
"""
log = logging.getLogger(__name__)

MAX_VARIABLES = 500  # ids per IN (...) query, under SQLite's variable limit
T = TypeVar("T")




def _claimed(conn: sqlite3.Connection, new: NewComment, key: str) -> Outcome | None:
    """What an earlier post with this key got, or None if the key is new."""
    row = conn.execute(
        f"SELECT i.body, {PREFIXED} FROM idempotency i "  # a deleted comment is read too: key_outcome says so
        "LEFT JOIN comments c ON c.video_id=i.video_id AND c.seq=i.seq WHERE i.video_id=? AND i.key=?",
        (new.video_id, key),
    ).fetchone()
    if row is None:
        return None
    return key_outcome(new, row[0], None if row[1] is None else row_entry(row[1:]))


class SqliteStorage(SqliteModeration):
    def __init__(self, path: str, group_commit: bool, max_pending: int) -> None:
        self._path = path
        self._group = GroupCommit(self._commit_batch, enabled=group_commit, max_pending=max_pending)
        self._writer = WriterThread("sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._failing = False  # the last write failed for want of the database
        self._full = False  # the last write failed for want of space
        self._opened: tuple[int, int] | None = None  # (device, inode) of the file the writer opened
        self._lost = ""  # why the file the writer holds is no longer the one at the path
        self.not_ready_reason = ""
        self.cursor_secret = b""

    @classmethod
    async def open_url(cls, url: str, *, group_commit: bool = True, max_pending: int = MAX_PENDING_POSTS) -> SqliteStorage:
        """sqlite:///relative.db, sqlite:////absolute.db (as SQLAlchemy spells them)."""
        return await cls.open(url.removeprefix("sqlite:///"), group_commit=group_commit, max_pending=max_pending)

    @classmethod
    async def open(cls, path: str, *, group_commit: bool = True, max_pending: int = MAX_PENDING_POSTS) -> SqliteStorage:
        self = cls(path, group_commit, max_pending)
        loop = asyncio.get_running_loop()
        self._wconn = await self._writer.run(self._open_writer)
        self._rconn = await loop.run_in_executor(self._reader, connect, path)
        return self

    def _open_writer(self) -> sqlite3.Connection:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self._path)
        self.cursor_secret = migrate(conn)
        self._opened = identity(self._path)  # after the migration: the file exists now (not for ":memory:")
        return conn

    def _check_file(self) -> None:
        """Refuse to write into a file that is no longer the one at the path (deleted, replaced)."""
        if self._lost:
            raise StorageLost(self._lost)
        if self._opened is None or (now := identity(self._path)) == self._opened:
            return
        how = "deleted" if now is None else "replaced by another file"
        self._lost = (f"the SQLite file {self._path} was {how} while the server ran: posts are refused "
                      "(they would go into the lost file); restore the file and restart")
        raise StorageLost(self._lost)

    def _say_lost(self) -> None:
        """On the loop: not ready from now on, said in one log line."""
        if self.not_ready_reason != self._lost:
            log.error("%s", self._lost)
            self.not_ready_reason = self._lost

    async def add(self, new: NewComment, idempotency_key: str | None = None) -> Comment:
        return await self._group.add(new, idempotency_key)

    def observe_commits(self, hook: OnCommit) -> None:
        self._group.on_commit = hook

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer thread; a database that cannot be written is StorageUnavailable."""
        assert self._wconn is not None
        conn = self._wconn

        def checked(conn: sqlite3.Connection) -> T:
            self._check_file()
            return fn(conn)

        try:
            result = await self._writer.run(lambda: checked(conn))
        except StorageLost:
            self._say_lost()
            raise
        except sqlite3.OperationalError as e:  # locked past LOCK_WAIT_S, disk full, I/O error
            self._failing = True
            if e.sqlite_errorcode == sqlite3.SQLITE_FULL:
                if not self._full:
                    log.error("SQLite %s is full (%s): posts are refused and /readyz is 503 until a write succeeds",
                              self._path, e)
                self._full = True
                self.not_ready_reason = f"SQLite {self._path} is full: the last write failed for lack of space"
                raise StorageFull(f"SQLite cannot write: {e}") from e
            self.not_ready_reason = f"SQLite cannot write: {e}"
            raise StorageUnavailable(self.not_ready_reason) from e
        if self._full:
            log.warning("SQLite %s has room again: writes succeed", self._path)
        self._failing = self._full = False
        self.not_ready_reason = ""
        return result

    async def _commit_batch(self, batch: list[Post]) -> list[Outcome]:
        return await self._write(lambda conn: self._commit(conn, batch))

    def _commit(self, conn: sqlite3.Connection, batch: list[Post]) -> list[Outcome]:
        """Runs on the writer thread: one transaction for the whole batch."""
        heads: dict[str, int] = {}
        now = time.time()
        out: list[Outcome] = []
        with immediate(conn):
            for new, key in batch:
                if key is not None and (earlier := _claimed(conn, new, key)) is not None:
                    out.append(earlier)
                    continue
                seq = heads.get(new.video_id)
                if seq is None:
                    row = conn.execute("SELECT seq FROM heads WHERE video_id=?", (new.video_id,)).fetchone()
                    seq = 0 if row is None else row[0]
                seq += 1
                heads[new.video_id] = seq
                comment = Comment(new.video_id, seq, new.author, new.text, now, new.user)
                conn.execute(
                    "INSERT INTO comments (video_id, seq, author, text, created_at, user_id) VALUES (?, ?, ?, ?, ?, ?)",
                    (comment.video_id, seq, comment.author, comment.text, now, new.user),
                )
                if key is not None:
                    conn.execute(
                        "INSERT INTO idempotency (video_id, key, seq, body) VALUES (?, ?, ?, ?)",
                        (new.video_id, key, seq, body_hash(new)),
                    )
                out.append(comment)
            conn.executemany(
                "INSERT INTO heads (video_id, seq) VALUES (?, ?) "
                "ON CONFLICT (video_id) DO UPDATE SET seq=excluded.seq", heads.items(),
            )
        return out

    async def prune(self, *, keep_comments: int, older_than: float, limit: int) -> int:
        return await self._write(lambda conn: self._prune(conn, keep_comments, older_than, limit))

    def _prune(self, conn: sqlite3.Connection, keep_comments: int, older_than: float, limit: int) -> int:
        """Runs on the writer thread, between group commits: one short transaction."""
        doomed: list[tuple[str, int]] = []
        if keep_comments > 0:
            doomed += conn.execute(OVER_COUNT, (keep_comments - 1, keep_comments, limit)).fetchall()
        if older_than > 0 and len(doomed) < limit:
            doomed += conn.execute(
                "SELECT video_id, seq FROM comments WHERE created_at < ? LIMIT ?", (older_than, limit - len(doomed)),
            ).fetchall()
        if not doomed:
            return 0
        with immediate(conn):
            deleted = conn.executemany("DELETE FROM comments WHERE video_id=? AND seq=?", doomed).rowcount
            conn.executemany("DELETE FROM idempotency WHERE video_id=? AND seq=?", doomed)
        return deleted

    async def healthy(self) -> bool:
        try:
            self._check_file()  # one stat, on the loop: no need to queue behind the commits
        except StorageLost:
            self._say_lost()
            return False
        if not self._failing:
            return True
        try:  # full: can a post's worth be written again? otherwise: can the write lock be taken again?
            await self._write(space_probe if self._full else probe)
        except StorageUnavailable:
            return False
        return True

    async def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._rconn is not None
        conn = self._rconn
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._reader, lambda: conn.execute(sql, args).fetchall()
            )
        except sqlite3.OperationalError as e:
            raise StorageUnavailable(f"SQLite cannot read: {e}") from e

    async def page(
        self, video_id: str, *, before: int | None = None, after: int | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[Comment]:
        if after is not None:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=? AND seq>? {LIVE} ORDER BY seq LIMIT ?"
            rows = await self._read(sql, (video_id, after, limit))
        elif before is not None:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=? AND seq<? {LIVE} ORDER BY seq DESC LIMIT ?"
            rows = await self._read(sql, (video_id, before, limit))
        else:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=? {LIVE} ORDER BY seq DESC LIMIT ? OFFSET ?"
            rows = await self._read(sql, (video_id, limit, offset))
        return [row_entry(r) for r in rows]

    async def since(self, video_id: str, seq: int, limit: int) -> list[Comment]:
        sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=? AND seq>? ORDER BY seq LIMIT ?"
        return [row_entry(r) for r in await self._read(sql, (video_id, seq, limit))]

    async def last_seq(self, video_id: str) -> int:
        return (await self.last_seqs([video_id]))[video_id]

    async def last_seqs(self, video_ids: Sequence[str]) -> dict[str, int]:
        heads = dict.fromkeys(video_ids, 0)
        ids = list(heads)
        for start in range(0, len(ids), MAX_VARIABLES):
            chunk = ids[start : start + MAX_VARIABLES]
            sql = f"SELECT video_id, seq FROM heads WHERE video_id IN ({','.join('?' * len(chunk))})"
            heads.update(await self._read(sql, tuple(chunk)))
        return heads

    async def close(self) -> None:
        await self._group.drain()  # posts accepted before shutdown commit first
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await self._writer.run(self._wconn.close)
        if self._rconn is not None:
            await loop.run_in_executor(self._reader, self._rconn.close)
        self._writer.stop()  # nothing queued: close() waited for the last of it
        self._reader.shutdown()


if TYPE_CHECKING:  # mypy checks here that the backend gives every protocol of base.py
    _IS_STORAGE: type[Storage] = SqliteStorage
