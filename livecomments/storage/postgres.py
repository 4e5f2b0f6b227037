"""PostgreSQL storage: for writers and realtime servers on several machines.

seq comes from a per-video counter row (`heads`) bumped inside the inserting
transaction: the row lock serialises writers of one video across processes, and
a rollback rolls the counter back too, so seq stays contiguous. Concurrent posts
are grouped into one transaction (group commit), as in the SQLite backend.

Several writers never deadlock: a batch takes its row locks in one global order,
first its idempotency keys (sorted), then its heads (sorted, each bumped once by
the batch's count for that video), so no two transactions wait on each other in
a cycle. A key another writer holds makes our insert wait for its commit and then
skip (ON CONFLICT DO NOTHING): that post gets the other's comment, and the rest
of the batch goes on.

created_at comes from the database's clock too (DB_NOW, in the inserting statement), not the
writer's: one clock for every writer, the one slow mode and bans decide by, so a writer whose
clock runs 60 s ahead does not stamp comments 60 s in the future, comments of one video do not
go back in time by a writer's skew from one seq to the next, and retention by age cuts at one
line. It costs nothing (the same statement, one more column back). What it cannot fix: a
viewer's own clock, e.g. the delivery-latency histogram, which compares with the realtime
server's clock.

A write that fails for lack of space (SQLSTATE 53100) is StorageFull: not ready until a write
succeeds again (a real write probes while it lasts), as in the SQLite backend.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]

from livecomments.model import Comment, NewComment
from livecomments.storage.base import KEY_REUSED, MAX_PENDING_POSTS, OnCommit, Storage, body_hash, key_outcome
from livecomments.storage.errors import IdempotencyKeyReused, StorageFull, StorageUnavailable
from livecomments.storage.group_commit import GroupCommit, Outcome, Post
from livecomments.storage.log import COLUMNS, LIVE, PREFIXED, row_entry
from livecomments.storage.pg_errors import translated
from livecomments.storage.postgres_moderation import DB_NOW, MODERATION_SCHEMA, PostgresModeration

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS comments (
    video_id   TEXT             NOT NULL,
    seq        BIGINT           NOT NULL,
    author     TEXT             NOT NULL,
    text       TEXT             NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (video_id, seq)
);
CREATE INDEX IF NOT EXISTS comments_created_at ON comments (created_at);
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
ALTER TABLE idempotency ADD COLUMN IF NOT EXISTS body BYTEA;
CREATE INDEX IF NOT EXISTS idempotency_seq ON idempotency (video_id, seq);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + MODERATION_SCHEMA
SCHEMA_VERSION = hashlib.sha256(SCHEMA.encode()).hexdigest()[:16]  # any change to SCHEMA runs it again
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 2.0
SPACE_PROBE = """
INSERT INTO meta VALUES ('space_probe', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 256) i))
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value;
DELETE FROM meta WHERE name = 'space_probe';
"""
CLAIM_KEYS = """
INSERT INTO idempotency (video_id, key, seq, body)
SELECT v, k, 0, b FROM unnest($1::text[], $2::text[], $3::bytea[]) AS t(v, k, b) ORDER BY v, k
ON CONFLICT DO NOTHING RETURNING video_id, key
"""
READ_KEYS = f"""
SELECT i.video_id, i.key, i.body, {PREFIXED}
FROM unnest($1::text[], $2::text[]) AS t(v, k)
JOIN idempotency i ON i.video_id = t.v AND i.key = t.k
LEFT JOIN comments c ON c.video_id = i.video_id AND c.seq = i.seq  -- a deleted one too: key_outcome says so
"""
# One statement: bump each video's head once, by its count, in sorted order (the lock order);
# number the batch's comments after the old head; insert them; point their keys at their seqs.
WRITE = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
        WITH ORDINALITY AS t(v, author, text, key, user_id, ord)
), clock AS (
    SELECT {DB_NOW} AS t
), counts AS (
    SELECT v, count(*) AS n FROM input GROUP BY v
), bumped AS (
    INSERT INTO heads (video_id, seq) SELECT v, n FROM counts ORDER BY v
    ON CONFLICT (video_id) DO UPDATE SET seq = heads.seq + EXCLUDED.seq RETURNING video_id, seq
), numbered AS (
    SELECT i.v, i.author, i.text, i.key, i.user_id, i.ord,
        b.seq - c.n + row_number() OVER (PARTITION BY i.v ORDER BY i.ord) AS seq
    FROM input i JOIN counts c ON c.v = i.v JOIN bumped b ON b.video_id = i.v
), inserted AS (
    INSERT INTO comments (video_id, seq, author, text, created_at, user_id)
    SELECT v, seq, author, text, clock.t, user_id FROM numbered, clock
), keys AS (
    UPDATE idempotency k SET seq = n.seq FROM numbered n WHERE n.key IS NOT NULL AND k.video_id = n.v AND k.key = n.key
)
SELECT ord, seq, clock.t FROM numbered, clock
""".replace("{DB_NOW}", DB_NOW)
PRUNE = """
WITH gone AS (
    DELETE FROM comments c USING unnest($1::text[], $2::bigint[]) AS d(v, s)
    WHERE c.video_id = d.v AND c.seq = d.s RETURNING c.video_id, c.seq
), keys AS (
    DELETE FROM idempotency i USING gone g WHERE i.video_id = g.video_id AND i.seq = g.seq
)
SELECT count(*) FROM gone
"""
# Retention by count: the entries before a video's Nth newest shown comment (N = $1). Only a video
# with an entry at or below head - N can have any (the Nth shown is at most head - N + 1), so the
# others cost one index probe, not a walk down N rows.
OVER_COUNT = """
SELECT h.video_id, x.seq FROM heads h
CROSS JOIN LATERAL (
    SELECT k.seq AS cutoff FROM comments k WHERE k.video_id = h.video_id AND k.deletes IS NULL AND NOT k.deleted
    ORDER BY k.seq DESC LIMIT 1 OFFSET $1 - 1
) n
CROSS JOIN LATERAL (
    SELECT c.seq FROM comments c WHERE c.video_id = h.video_id AND c.seq < n.cutoff ORDER BY c.seq LIMIT $2
) x
WHERE EXISTS (SELECT 1 FROM comments o WHERE o.video_id = h.video_id AND o.seq <= h.seq - $1)
LIMIT $2
"""


async def _schema_is_current(conn: asyncpg.Connection) -> bool:
    if await conn.fetchval("SELECT to_regclass('meta')") is None:
        return False
    return bool(await conn.fetchval("SELECT value = $1 FROM meta WHERE name = 'schema'", SCHEMA_VERSION))


class PostgresStorage(PostgresModeration):
    def __init__(self, pool: asyncpg.Pool, cursor_secret: bytes, group_commit: bool, max_pending: int) -> None:
        self._pool = pool
        self._group = GroupCommit(self._commit, enabled=group_commit, max_pending=max_pending)
        self.cursor_secret = cursor_secret
        self._full = False  # the last write failed for lack of space
        self.not_ready_reason = ""

    @classmethod
    async def open_url(cls, url: str, *, group_commit: bool = True, max_pending: int = MAX_PENDING_POSTS) -> PostgresStorage:
        return await cls.open(url, group_commit=group_commit, max_pending=max_pending)

    @classmethod
    async def open(
        cls, url: str, *, group_commit: bool = True, max_pending: int = MAX_PENDING_POSTS,
    ) -> PostgresStorage:
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=8, timeout=CONNECT_TIMEOUT_S, command_timeout=COMMAND_TIMEOUT_S,
        )
        try:
            async with pool.acquire() as conn:
                if not await _schema_is_current(conn):
                    # Several processes may start at once: serialise the DDL. It runs only when the
                    # schema is missing or older: ALTER TABLE takes an exclusive lock even when it
                    # changes nothing, and against running writers' row locks that can deadlock.
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(7343)")
                        await conn.execute(SCHEMA)
                        await conn.execute(
                            "INSERT INTO meta VALUES ('schema', $1) ON CONFLICT (name) DO UPDATE SET value = $1",
                            SCHEMA_VERSION,
                        )
                await conn.execute(
                    "INSERT INTO meta VALUES ('cursor_secret', $1) ON CONFLICT DO NOTHING", secrets.token_hex(32),
                )
                secret = await conn.fetchval("SELECT value FROM meta WHERE name = 'cursor_secret'")
        except BaseException:
            await pool.close()
            raise
        return cls(pool, bytes.fromhex(secret), group_commit, max_pending)

    async def add(self, new: NewComment, idempotency_key: str | None = None) -> Comment:
        return await self._group.add(new, idempotency_key)

    def observe_commits(self, hook: OnCommit) -> None:
        self._group.on_commit = hook

    async def _commit(self, batch: list[Post]) -> list[Outcome]:
        try:
            out = await self._commit_batch(batch)
        except StorageFull as e:
            if not self._full:
                log.error("%s: posts are refused and /readyz is 503 until a write succeeds", e)
            self._full = True
            raise
        self._room_again()
        return out

    def _room_again(self) -> None:
        if self._full:
            log.warning("PostgreSQL has room again: writes succeed")
        self._full = False

    async def _commit_batch(self, batch: list[Post]) -> list[Outcome]:
        out: list[Outcome | None] = [None] * len(batch)
        async with translated(), self._pool.acquire() as conn:
            if all(key is None for _, key in batch):
                # One statement is its own transaction: the heads stay locked only while it runs
                # in the server, not across round trips, so another writer waits the least.
                await self._write(conn, batch, list(range(len(batch))), out)
            else:
                async with conn.transaction():
                    await self._write_keyed(conn, batch, out)
        done = [o for o in out if o is not None]
        if len(done) != len(batch):  # every post is answered, or the whole batch fails: never a short list
            raise RuntimeError(f"commit left {len(batch) - len(done)} of {len(batch)} posts unanswered")
        return done

    async def _write_keyed(self, conn: asyncpg.Connection, batch: list[Post], out: list[Outcome | None]) -> None:
        first: dict[tuple[str, str], int] = {}  # (video, key) -> the batch's first post with it
        for i, (new, key) in enumerate(batch):
            if key is not None:
                first.setdefault((new.video_id, key), i)
        # Keys first, sorted: a key in another writer's open transaction makes us wait for its commit.
        keys = sorted(first)
        bodies = [body_hash(batch[first[k]][0]) for k in keys]
        rows = await conn.fetch(CLAIM_KEYS, [v for v, _ in keys], [k for _, k in keys], bodies)
        taken = sorted(set(keys) - {(r[0], r[1]) for r in rows})
        if taken:  # used before (or by that other writer): the post gets the first comment
            for r in await conn.fetch(READ_KEYS, [v for v, _ in taken], [k for _, k in taken]):
                i = first[(r[0], r[1])]
                out[i] = key_outcome(batch[i][0], r[2], None if r[3] is None else row_entry(r[3:]))
        fresh = [
            i for i, (new, key) in enumerate(batch) if out[i] is None and (key is None or first[(new.video_id, key)] == i)
        ]
        await self._write(conn, batch, fresh, out)
        # A key repeated within the batch follows its first post, if the bodies match.
        for i, (new, key) in enumerate(batch):
            if out[i] is None and key is not None:
                j = first[(new.video_id, key)]
                same = body_hash(new) == body_hash(batch[j][0])
                out[i] = out[j] if same else IdempotencyKeyReused(KEY_REUSED)

    async def _write(self, conn: asyncpg.Connection, batch: list[Post], fresh: list[int], out: list[Outcome | None]) -> None:
        """Store the posts at `fresh` (indexes into batch), seq numbered in batch order per video."""
        if not fresh:
            return
        posts = [batch[i] for i in fresh]
        rows = await conn.fetch(
            WRITE, [n.video_id for n, _ in posts], [n.author for n, _ in posts], [n.text for n, _ in posts],
            [key for _, key in posts], [n.user for n, _ in posts],
        )
        for ordinal, seq, created_at in rows:
            new = batch[fresh[ordinal - 1]][0]
            out[fresh[ordinal - 1]] = Comment(new.video_id, seq, new.author, new.text, created_at, new.user)

    async def prune(self, *, keep_comments: int, older_than: float, limit: int) -> int:
        async with translated(), self._pool.acquire() as conn:
            doomed: list[Any] = []
            if keep_comments > 0:
                doomed += await conn.fetch(OVER_COUNT, keep_comments, limit)
            if older_than > 0 and len(doomed) < limit:
                doomed += await conn.fetch(
                    "SELECT video_id, seq FROM comments WHERE created_at < $1 LIMIT $2", older_than, limit - len(doomed),
                )
            if not doomed:
                return 0
            return int(await conn.fetchval(PRUNE, [r[0] for r in doomed], [r[1] for r in doomed]))

    async def healthy(self) -> bool:
        try:  # reachable, and not a standby that cannot take writes
            async with translated():
                primary = bool(await self._pool.fetchval("SELECT NOT pg_is_in_recovery()", timeout=PROBE_TIMEOUT_S))
        except StorageUnavailable as e:
            self.not_ready_reason = str(e)
            return False
        if not primary:
            self.not_ready_reason = "PostgreSQL is a standby (in recovery): it cannot take writes"
            return False
        if self._full:
            try:  # a post's worth of row, committed then removed: can posts be stored again?
                async with translated(), self._pool.acquire(timeout=PROBE_TIMEOUT_S) as conn:
                    await conn.execute(SPACE_PROBE, timeout=PROBE_TIMEOUT_S)
            except StorageUnavailable as e:
                self.not_ready_reason = f"the last write failed for lack of space: {e}"
                return False
            self._room_again()
        self.not_ready_reason = ""
        return True

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with translated():
            return list(await self._pool.fetch(sql, *args))

    async def page(
        self, video_id: str, *, before: int | None = None, after: int | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[Comment]:
        if after is not None:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=$1 AND seq>$2 {LIVE} ORDER BY seq LIMIT $3"
            rows = await self._fetch(sql, video_id, after, limit)
        elif before is not None:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=$1 AND seq<$2 {LIVE} ORDER BY seq DESC LIMIT $3"
            rows = await self._fetch(sql, video_id, before, limit)
        else:
            sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=$1 {LIVE} ORDER BY seq DESC LIMIT $2 OFFSET $3"
            rows = await self._fetch(sql, video_id, limit, offset)
        return [row_entry(r) for r in rows]

    async def since(self, video_id: str, seq: int, limit: int) -> list[Comment]:
        sql = f"SELECT {COLUMNS} FROM comments WHERE video_id=$1 AND seq>$2 ORDER BY seq LIMIT $3"
        return [row_entry(r) for r in await self._fetch(sql, video_id, seq, limit)]

    async def last_seq(self, video_id: str) -> int:
        return (await self.last_seqs([video_id]))[video_id]

    async def last_seqs(self, video_ids: Sequence[str]) -> dict[str, int]:
        heads = dict.fromkeys(video_ids, 0)
        rows = await self._fetch("SELECT video_id, seq FROM heads WHERE video_id = ANY($1::text[])", list(heads))
        heads.update((r[0], int(r[1])) for r in rows)
        return heads

    async def close(self) -> None:
        await self._group.drain()  # posts accepted before shutdown commit first
        await self._pool.close()


if TYPE_CHECKING:  # mypy checks here that the backend gives every protocol of base.py
    _IS_STORAGE: type[Storage] = PostgresStorage
