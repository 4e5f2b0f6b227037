"""The SQLite writer's thread: functions run on it one at a time, in the order given.

What run_in_executor does for a one-thread pool, with less per call: no concurrent Future (a
lock and a condition each), no wrapping of it in an asyncio one, no pool bookkeeping. The loop
hands the thread (function, future) on a SimpleQueue; the thread settles the future through
call_soon_threadsafe. One hop per group commit, so this is paid once per batch of posts.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class WriterThread:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        # A daemon: a process that exits without close() must not hang on it; a commit cut short
        # by that exit is rolled back by SQLite, as a crash would be.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """`fn()` on the thread, after everything given before it; its result or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn))
        return future

    def stop(self) -> None:
        """End the thread once what it was given has run (blocks for that: call it from a thread
        of its own or when nothing is queued)."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn = job
            try:
                result = fn()
            except BaseException as e:  # handed to the caller, whatever it is
                _settle(loop, future, None, e)
            else:
                _settle(loop, future, result, None)


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    def settle() -> None:
        if future.cancelled():  # its caller went away; the work is done all the same
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop closed meanwhile: nobody is left to tell
        pass
