"""Group commit: posts that arrive while a transaction commits share the next one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from livecomments.model import Comment, NewComment
from livecomments.storage.base import MAX_PENDING_POSTS, OnCommit
from livecomments.storage.errors import Overloaded, StorageError

Post = tuple[NewComment, str | None]  # the comment and its idempotency key
Outcome = Comment | StorageError  # per post: one post's refusal (a reused key) never fails the others
Commit = Callable[[list[Post]], Awaitable[list[Outcome]]]  # one transaction; all or nothing
MAX_BATCH = 256


class GroupCommit:
    """Queues posts and runs `commit` on batches, one at a time, in arrival order.

    No timer: the first post commits alone at once, and whatever arrives during that
    commit forms the next batch, so batches grow exactly as fast as posts outrun fsync.
    `enabled=False` commits one post per transaction (the benchmark's baseline).
    At most `max_pending` posts wait or commit at once; past that `add` raises
    Overloaded at once, so a slow database costs bounded memory and the client hears so.
    """

    def __init__(self, commit: Commit, *, enabled: bool = True, max_pending: int = MAX_PENDING_POSTS) -> None:
        self._commit = commit
        self._size = MAX_BATCH if enabled else 1
        self._max_pending = max_pending
        self._pending: list[tuple[Post, asyncio.Future[Comment]]] = []
        self._committing = 0
        self._flusher: asyncio.Task[None] | None = None
        self.on_commit: OnCommit | None = None

    async def add(self, new: NewComment, idempotency_key: str | None) -> Comment:
        if len(self._pending) + self._committing >= self._max_pending:
            raise Overloaded(f"{self._max_pending} posts are already waiting for storage")
        fut: asyncio.Future[Comment] = asyncio.get_running_loop().create_future()
        self._pending.append(((new, idempotency_key), fut))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        # Awaited bare, no shield: a cancelled request cancels only its own future, and its post
        # stays in the batch (stored, answered to nobody), as the flusher skips a done future.
        return await fut

    async def drain(self) -> None:
        """Wait until every accepted post is committed (or failed)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._size], self._pending[self._size :]
                self._committing = len(batch)
                started = time.perf_counter()
                try:
                    results = await self._commit([post for post, _ in batch])
                except Exception as e:  # the batch was rolled back: nothing of it is stored
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                finally:
                    self._committing = 0
                if self.on_commit is not None:
                    self.on_commit(time.perf_counter() - started, len(batch))
                for (_, fut), outcome in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(outcome, StorageError):
                        fut.set_exception(outcome)
                    else:
                        fut.set_result(outcome)
        finally:
            self._flusher = None

