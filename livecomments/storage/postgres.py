"""PostgreSQL storage: for writers and realtime servers on several machines.

seq comes from a per-video counter row (`heads`) bumped inside the inserting
transaction: the row lock serialises writers of one video across processes, and
a rollback rolls the counter back too, so seq stays contiguous. Concurrent posts
are grouped into one transaction (group commit), as in the SQLite backend.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from livecomments.model import Comment, NewComment
from livecomments.storage.group_commit import GroupCommit, Post

SCHEMA = """
CREATE TABLE IF NOT EXISTS comments (
    video_id   TEXT             NOT NULL,
    seq        BIGINT           NOT NULL,
    author     TEXT             NOT NULL,
    text       TEXT             NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (video_id, seq)
);
CREATE TABLE IF NOT EXISTS heads (
    video_id TEXT   PRIMARY KEY,
    seq      BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    video_id TEXT   NOT NULL,
    key      TEXT   NOT NULL,
    seq      BIGINT NOT NULL,
    PRIMARY KEY (video_id, key)
);
"""
COLUMNS = "video_id, seq, author, text, created_at"


def _row(r: Any) -> Comment:
    return Comment(video_id=r[0], seq=r[1], author=r[2], text=r[3], created_at=r[4])


class PostgresStorage:
    def __init__(self, pool: asyncpg.Pool, group_commit: bool) -> None:
        self._pool = pool
        self._group = GroupCommit(self._commit, enabled=group_commit)

    @classmethod
    async def open(cls, url: str, *, group_commit: bool = True) -> PostgresStorage:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=8)
        async with pool.acquire() as conn:
            # several processes may start at once: serialise the CREATE TABLEs
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7343)")
                await conn.execute(SCHEMA)
        return cls(pool, group_commit)

    async def add(self, new: NewComment, idempotency_key: str | None = None) -> Comment:
        return await self._group.add(new, idempotency_key)

    async def _commit(self, batch: list[Post]) -> list[Comment]:
        now = time.time()
        out: list[Comment] = []
        seen: dict[tuple[str, str], Comment] = {}  # the same key twice in one batch
        async with self._pool.acquire() as conn, conn.transaction():
            for new, key in batch:
                if key is not None:
                    if (new.video_id, key) in seen:
                        out.append(seen[(new.video_id, key)])
                        continue
                    row = await conn.fetchrow(
                        f"SELECT {COLUMNS} FROM comments WHERE video_id=$1 AND seq="
                        "(SELECT seq FROM idempotency WHERE video_id=$1 AND key=$2)",
                        new.video_id, key,
                    )
                    if row is not None:
                        out.append(_row(row))
                        continue
                seq = await conn.fetchval(
                    "INSERT INTO heads (video_id, seq) VALUES ($1, 1) ON CONFLICT (video_id) "
                    "DO UPDATE SET seq = heads.seq + 1 RETURNING seq",
                    new.video_id,
                )
                comment = Comment(new.video_id, seq, new.author, new.text, now)
                await conn.execute(
                    f"INSERT INTO comments ({COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
                    new.video_id, seq, new.author, new.text, now,
                )
                if key is not None:
                    await conn.execute(
                        "INSERT INTO idempotency (video_id, key, seq) VALUES ($1, $2, $3)",
                        new.video_id, key, seq,
                    )
                    seen[(new.video_id, key)] = comment
                out.append(comment)
        return out

    async def page(
        self, video_id: str, *, before: int | None = None, after: int | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[Comment]:
        if after is not None:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=$1 AND seq>$2 ORDER BY seq LIMIT $3"
            rows = await self._pool.fetch(sql, video_id, after, limit)
        elif before is not None:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=$1 AND seq<$2 ORDER BY seq DESC LIMIT $3"
            rows = await self._pool.fetch(sql, video_id, before, limit)
        else:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=$1 ORDER BY seq DESC LIMIT $2 OFFSET $3"
            rows = await self._pool.fetch(sql, video_id, limit, offset)
        return [_row(r) for r in rows]

    async def since(self, video_id: str, seq: int, limit: int) -> list[Comment]:
        sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=$1 AND seq>$2 ORDER BY seq LIMIT $3"
        return [_row(r) for r in await self._pool.fetch(sql, video_id, seq, limit)]

    async def last_seq(self, video_id: str) -> int:
        value = await self._pool.fetchval(
            "SELECT COALESCE(MAX(seq), 0) FROM comments WHERE video_id=$1", video_id
        )
        return int(value)

    async def close(self) -> None:
        await self._group.drain()  # posts accepted before shutdown commit first
        await self._pool.close()
