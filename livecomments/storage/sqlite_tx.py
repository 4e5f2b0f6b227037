"""One SQLite write transaction, the way every writer-thread function takes it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (the write lock now, not at the first write, so two processes cannot both
    read then fail to upgrade) … COMMIT; ROLLBACK on any error, unless SQLite already rolled back
    by itself (disk full, I/O error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
