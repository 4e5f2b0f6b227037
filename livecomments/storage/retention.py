"""Retention: old comments deleted in the background, in small batches, so posts never wait long."""

from __future__ import annotations

import asyncio
import logging
import time

from livecomments.storage.base import Retention
from livecomments.storage.errors import StorageUnavailable

log = logging.getLogger(__name__)

BATCH = 500  # rows per delete transaction: short enough that a group commit waits little behind it
DAY_S = 86_400.0


async def run_retention(storage: Retention, *, keep_comments: int, keep_days: float, interval: float) -> None:
    """Every `interval` seconds, delete what retention no longer keeps, a batch at a time,
    and forget ended bans and slow-mode records (also when retention keeps everything).

    A video's head stays, so its seq never restarts; a resume from a deleted seq gets
    `event: reset` with the oldest kept one. Every writer may run this on one database:
    deleting a row twice is harmless.
    """
    while True:
        older_than = time.time() - keep_days * DAY_S if keep_days > 0 else 0.0
        try:
            while (keep_comments or keep_days) and await storage.prune(
                keep_comments=keep_comments, older_than=older_than, limit=BATCH,
            ) == BATCH:
                await asyncio.sleep(0)  # let posts and reads in between batches
            await storage.forget_expired()
        except StorageUnavailable as e:
            log.warning("retention skipped: %s", e)
        except Exception:  # a bug here must not end retention for the life of the process
            log.exception("retention pass failed")
        await asyncio.sleep(interval)
