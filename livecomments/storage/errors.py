"""What storage refuses, framework-free; errors.py maps each to the HTTP error shape."""

from __future__ import annotations


class StorageError(Exception):
    """A post or read that storage refused; nothing was stored for it."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or cannot store now (stopped, restarting, disk full)."""


class StorageFull(StorageUnavailable):
    """The last write failed for lack of space (disk full, SQLite's max_page_count, PostgreSQL 53100):
    not ready until a write succeeds again."""


class StorageLost(StorageUnavailable):
    """The database file was deleted or replaced under the running server: writing on would
    acknowledge posts into a file nobody will open again. Refused until a restart."""


class Overloaded(StorageError):
    """More posts are waiting for a commit than the configured bound: refused, not queued."""


class IdempotencyKeyReused(StorageError):
    """The Idempotency-Key was first used for a different comment (author or text differ)."""


class NoSuchComment(StorageError):
    """A delete named a seq that is not a comment of the video (never was, or retention removed it)."""


class NotYourComment(StorageError):
    """A delete by a user who is neither a moderator nor the comment's own poster."""


class CommentDeleted(StorageError):
    """A retry under an Idempotency-Key whose comment was deleted since (by a moderator or its
    poster): nothing is stored again, and the key stays used until retention drops the comment."""
