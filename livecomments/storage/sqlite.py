"""SQLite storage: WAL, seq assigned in the inserting transaction, group commit.

Why not aiosqlite: it hops to its thread once per statement, and a group commit of
64 posts is ~130 statements. Here a whole batch is one function run on one
dedicated writer thread, i.e. one hop and one fsync per batch. Reads use their own
connection on their own thread, which WAL lets run beside the writer.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from livecomments.model import Comment, NewComment
from livecomments.storage.group_commit import GroupCommit, Post

SCHEMA = """
CREATE TABLE IF NOT EXISTS comments (
    video_id   TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    author     TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    PRIMARY KEY (video_id, seq)          -- cursor pages and resumes are O(log n) seeks
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    video_id TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (video_id, key)
) WITHOUT ROWID;
"""
LOCK_WAIT_S = 10.0
COLUMNS = "video_id, seq, author, text, created_at"


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=LOCK_WAIT_S, isolation_level=None, check_same_thread=False)
    _switch_to_wal(conn)
    conn.execute("PRAGMA synchronous=FULL")  # an acknowledged comment survives power loss
    return conn


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    # Processes of one cluster open a new file together. Switching it to WAL needs an exclusive lock,
    # and where waiting could deadlock SQLite answers "database is locked" at once without calling its
    # busy handler, so the switch is retried here (it is a no-op once the file is in WAL).
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))


def _row(r: tuple[Any, ...]) -> Comment:
    return Comment(video_id=r[0], seq=r[1], author=r[2], text=r[3], created_at=r[4])


class SqliteStorage:
    def __init__(self, path: str, group_commit: bool) -> None:
        self._path = path
        self._group = GroupCommit(self._commit_batch, enabled=group_commit)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str, *, group_commit: bool = True) -> SqliteStorage:
        self = cls(path, group_commit)
        loop = asyncio.get_running_loop()
        self._wconn = await loop.run_in_executor(self._writer, self._open_writer)
        self._rconn = await loop.run_in_executor(self._reader, _connect, path)
        return self

    def _open_writer(self) -> sqlite3.Connection:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self._path)
        conn.executescript(SCHEMA)
        return conn

    async def add(self, new: NewComment, idempotency_key: str | None = None) -> Comment:
        return await self._group.add(new, idempotency_key)

    async def _commit_batch(self, batch: list[Post]) -> list[Comment]:
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._commit, batch)

    def _commit(self, batch: list[Post]) -> list[Comment]:
        """Runs on the writer thread: one transaction for the whole batch."""
        assert self._wconn is not None
        conn = self._wconn
        heads: dict[str, int] = {}
        now = time.time()
        out: list[Comment] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for new, key in batch:
                if key is not None:
                    row = conn.execute(
                        f"SELECT {COLUMNS} FROM comments WHERE video_id=? AND seq="
                        "(SELECT seq FROM idempotency WHERE video_id=? AND key=?)",
                        (new.video_id, new.video_id, key),
                    ).fetchone()
                    if row is not None:
                        out.append(_row(row))
                        continue
                seq = heads.get(new.video_id)
                if seq is None:
                    seq = conn.execute(
                        "SELECT COALESCE(MAX(seq), 0) FROM comments WHERE video_id=?", (new.video_id,)
                    ).fetchone()[0]
                seq += 1
                heads[new.video_id] = seq
                comment = Comment(new.video_id, seq, new.author, new.text, now)
                conn.execute(
                    f"INSERT INTO comments ({COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                    (comment.video_id, seq, comment.author, comment.text, now),
                )
                if key is not None:
                    conn.execute(
                        "INSERT INTO idempotency (video_id, key, seq) VALUES (?, ?, ?)",
                        (new.video_id, key, seq),
                    )
                out.append(comment)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return out

    async def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._rconn is not None
        conn = self._rconn
        return await asyncio.get_running_loop().run_in_executor(
            self._reader, lambda: conn.execute(sql, args).fetchall()
        )

    async def page(
        self, video_id: str, *, before: int | None = None, after: int | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[Comment]:
        if after is not None:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=? AND seq>? ORDER BY seq LIMIT ?"
            rows = await self._read(sql, (video_id, after, limit))
        elif before is not None:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=? AND seq<? ORDER BY seq DESC LIMIT ?"
            rows = await self._read(sql, (video_id, before, limit))
        else:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=? ORDER BY seq DESC LIMIT ? OFFSET ?"
            rows = await self._read(sql, (video_id, limit, offset))
        return [_row(r) for r in rows]

    async def since(self, video_id: str, seq: int, limit: int) -> list[Comment]:
        sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=? AND seq>? ORDER BY seq LIMIT ?"
        return [_row(r) for r in await self._read(sql, (video_id, seq, limit))]

    async def last_seq(self, video_id: str) -> int:
        rows = await self._read("SELECT COALESCE(MAX(seq), 0) FROM comments WHERE video_id=?", (video_id,))
        return int(rows[0][0])

    async def close(self) -> None:
        await self._group.drain()  # posts accepted before shutdown commit first
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await loop.run_in_executor(self._writer, self._wconn.close)
        if self._rconn is not None:
            await loop.run_in_executor(self._reader, self._rconn.close)
        self._writer.shutdown()
        self._reader.shutdown()
