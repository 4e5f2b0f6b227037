"""Which PostgreSQL failures mean "cannot serve now" (StorageUnavailable), for every PostgreSQL module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-untyped]

from livecomments.storage.errors import StorageFull, StorageUnavailable

# SQLSTATE classes meaning "the database cannot serve now", not "this request is wrong":
# 08 connection, 53 insufficient resources (disk full, too many connections), 57 operator
# intervention (shutdown, restart), 25006 read-only transaction (a standby after failover).
UNAVAILABLE_CLASSES = ("08", "53", "57")
DISK_FULL = "53100"


def _unavailable(e: BaseException) -> bool:
    if isinstance(e, OSError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
        return True  # refused, reset, timed out (TimeoutError is an OSError), connection gone
    if isinstance(e, asyncpg.InternalClientError):
        return True  # "cannot switch to state …": a connection the server killed mid-query (seen in the fault suite)
    if isinstance(e, asyncpg.PostgresError):
        state = str(getattr(e, "sqlstate", "") or "")
        return state[:2] in UNAVAILABLE_CLASSES or state == "25006"
    return False


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    try:
        yield
    except Exception as e:
        if isinstance(e, asyncpg.PostgresError) and getattr(e, "sqlstate", "") == DISK_FULL:
            raise StorageFull(f"PostgreSQL: {type(e).__name__}: {e}") from e
        if _unavailable(e):
            raise StorageUnavailable(f"PostgreSQL: {type(e).__name__}: {e}") from e
        raise
