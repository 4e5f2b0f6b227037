"""The SQLite file itself: opening it (WAL, durability, secure delete), its schema and migrations,
and the probes of its health (the write lock, free space, the file's identity on disk). Every
function here runs on the storage's threads (storage/sqlite.py), never on the event loop."""

from __future__ import annotations

import os
import random
import secrets
import sqlite3
import time

from livecomments.storage.sqlite_moderation import LOG_COLUMNS, MODERATION_SCHEMA, USER_INDEX, USER_INDEX_WHERE
from livecomments.storage.sqlite_tx import immediate

LOCK_WAIT_S = 10.0
PROBE_WAIT_S = 1.0
SPACE_PROBE_BYTES = 8 * 1024  # a post's largest text and author, UTF-8

SCHEMA = """
CREATE TABLE IF NOT EXISTS comments (
    video_id   TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    author     TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    PRIMARY KEY (video_id, seq)          -- cursor pages and resumes are O(log n) seeks
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS comments_created_at ON comments (created_at);  -- retention by age
CREATE TABLE IF NOT EXISTS idempotency (
    video_id TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (video_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_seq ON idempotency (video_id, seq);  -- retention drops keys too
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
""" + MODERATION_SCHEMA
# A video's head outlives its comments (retention), so seq never restarts at 1.
HEADS = """
CREATE TABLE heads (video_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO heads SELECT video_id, MAX(seq) FROM comments GROUP BY video_id;
"""


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=LOCK_WAIT_S, isolation_level=None, check_same_thread=False)
    switch_to_wal(conn)
    conn.execute("PRAGMA synchronous=FULL")  # an acknowledged comment survives power loss
    conn.execute("PRAGMA secure_delete=ON")  # a deleted comment's text is zeroed in the file, not left in free space
    return conn


def switch_to_wal(conn: sqlite3.Connection) -> None:
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


def migrate(conn: sqlite3.Connection) -> bytes:
    """Create or upgrade the schema (in one write transaction, as other processes may race us);
    returns the database's cursor secret."""
    with immediate(conn):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name='heads'").fetchone() is None:
            for statement in HEADS.split(";"):
                if statement.strip():
                    conn.execute(statement)
        if "body" not in {r[1] for r in conn.execute("PRAGMA table_info(idempotency)")}:
            conn.execute("ALTER TABLE idempotency ADD COLUMN body BLOB")  # NULL: kept before bodies were
        columns = {r[1] for r in conn.execute("PRAGMA table_info(comments)")}
        for column, declaration in LOG_COLUMNS.items():
            if column not in columns:  # a database made before moderation: its rows are plain comments
                conn.execute(f"ALTER TABLE comments ADD COLUMN {column} {declaration}")
        made = conn.execute("SELECT sql FROM sqlite_master WHERE type='index' AND name='comments_by_user'").fetchone()
        if made is not None and USER_INDEX_WHERE not in made[0]:  # made when it also took anonymous posts
            conn.execute("DROP INDEX comments_by_user")  # remade at once below, in this transaction
        conn.execute(USER_INDEX)  # erasing a user; built over the existing rows on an upgrade
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('cursor_secret', ?)", (secrets.token_hex(32),))
        secret = conn.execute("SELECT value FROM meta WHERE name='cursor_secret'").fetchone()[0]
    return bytes.fromhex(secret)


def probe(conn: sqlite3.Connection) -> None:
    """Take and drop the write lock, waiting briefly: a readiness check must answer fast."""
    conn.execute(f"PRAGMA busy_timeout={int(PROBE_WAIT_S * 1000)}")
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT_S * 1000)}")


def space_probe(conn: sqlite3.Connection) -> None:
    """After a write failed for want of space: could a post of the largest size be committed now?
    Writes one, commits (the WAL must grow as a post's would), and removes it in a second commit.
    Runs only while the storage is known full, so it costs the write path nothing."""
    with immediate(conn):
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('space_probe', ?)", ("x" * SPACE_PROBE_BYTES,))
    with immediate(conn):
        conn.execute("DELETE FROM meta WHERE name='space_probe'")


def identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) at `path`, None when nothing is there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
