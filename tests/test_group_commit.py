"""GroupCommit and the SQLite writer thread on their own: a post whose request is cancelled is
still stored and costs the other posts of its batch nothing; jobs run in order; errors reach
their caller."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from livecomments.model import Comment, NewComment
from livecomments.storage.errors import StorageUnavailable
from livecomments.storage.group_commit import GroupCommit, Outcome, Post
from livecomments.storage.sqlite_thread import WriterThread


class Log:
    """A commit that holds each batch until released, so a test can cancel a post mid-commit."""

    def __init__(self, fail: bool = False) -> None:
        self.stored: list[str] = []
        self.release = asyncio.Event()
        self.committing = asyncio.Event()
        self.fail = fail

    async def commit(self, batch: list[Post]) -> list[Outcome]:
        self.committing.set()
        await asyncio.wait_for(self.release.wait(), 5)
        if self.fail:
            raise StorageUnavailable("down")
        self.stored += [new.text for new, _ in batch]
        return [Comment(new.video_id, n, new.author, new.text, 0.0) for n, (new, _) in enumerate(batch, 1)]


async def test_a_cancelled_post_is_stored_and_its_batch_answered() -> None:
    log = Log()
    group = GroupCommit(log.commit)
    first = asyncio.create_task(group.add(NewComment("v", "a", "first"), None))
    await asyncio.wait_for(log.committing.wait(), 5)
    gone = asyncio.create_task(group.add(NewComment("v", "a", "gone"), None))
    kept = asyncio.create_task(group.add(NewComment("v", "a", "kept"), None))
    await asyncio.sleep(0)  # both queued behind the first commit
    gone.cancel()
    log.release.set()
    assert (await asyncio.wait_for(first, 5)).text == "first"
    assert (await asyncio.wait_for(kept, 5)).text == "kept"
    with pytest.raises(asyncio.CancelledError):
        await gone
    await asyncio.wait_for(group.drain(), 5)
    assert log.stored == ["first", "gone", "kept"]


async def test_a_failed_batch_fails_each_post_and_leaves_no_unretrieved_error(caplog: pytest.LogCaptureFixture) -> None:
    log = Log(fail=True)
    group = GroupCommit(log.commit)
    waiting = asyncio.create_task(group.add(NewComment("v", "a", "x"), None))
    gone = asyncio.create_task(group.add(NewComment("v", "a", "y"), None))
    await asyncio.wait_for(log.committing.wait(), 5)
    gone.cancel()
    log.release.set()
    with pytest.raises(StorageUnavailable):
        await asyncio.wait_for(waiting, 5)
    await asyncio.wait_for(group.drain(), 5)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        del gone
        gc.collect()
    assert "never retrieved" not in caplog.text


async def test_the_writer_thread_runs_jobs_in_order_and_hands_back_errors() -> None:
    thread = WriterThread("test-writer")
    try:
        done: list[int] = []
        results = await asyncio.wait_for(asyncio.gather(*(thread.run(lambda n=n: done.append(n) or n) for n in range(50))), 5)
        assert results == done == list(range(50))

        def fails() -> None:
            raise ValueError("no")

        with pytest.raises(ValueError, match="no"):
            await asyncio.wait_for(thread.run(fails), 5)
        assert await asyncio.wait_for(thread.run(lambda: "still serving"), 5) == "still serving"
    finally:
        thread.stop()
