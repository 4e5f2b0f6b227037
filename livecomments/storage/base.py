"""The storage seam: comments saved with a per-video seq assigned in the same transaction."""

from __future__ import annotations

from typing import Protocol

from livecomments.model import Comment, NewComment


class Storage(Protocol):
    """Durable comment history.

    Guarantees: `add` returns only after the comment is committed; seq is per video,
    starts at 1 and is contiguous; a retry with the same idempotency key returns the
    first comment and stores nothing new. Reads see every committed comment.
    """

    async def add(self, new: NewComment, idempotency_key: str | None = None) -> Comment: ...

    async def page(
        self, video_id: str, *, before: int | None = None, after: int | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[Comment]:
        """`before`: seq < before, newest first. `after`: seq > after, oldest first.
        Neither: newest first from the head, skipping `offset` rows (the slow way)."""
        ...

    async def since(self, video_id: str, seq: int, limit: int) -> list[Comment]:
        """Comments with seq > `seq`, oldest first, at most `limit`."""
        ...

    async def last_seq(self, video_id: str) -> int:
        """The highest stored seq of the video, 0 if none."""
        ...

    async def close(self) -> None: ...


async def open_storage(url: str, *, group_commit: bool = True) -> Storage:
    """Pick the backend by URL scheme; imports are lazy so unused drivers need not be installed."""
    if url.startswith("sqlite://"):
        from livecomments.storage.sqlite import SqliteStorage

        # sqlite:///relative.db, sqlite:////absolute.db (as SQLAlchemy spells them)
        return await SqliteStorage.open(url.removeprefix("sqlite:///"), group_commit=group_commit)
    if url.startswith(("postgresql://", "postgres://")):
        from livecomments.storage.postgres import PostgresStorage

        return await PostgresStorage.open(url, group_commit=group_commit)
    raise ValueError(f"unknown storage URL {url!r}")
