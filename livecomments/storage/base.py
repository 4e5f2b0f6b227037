"""The storage seam: comments saved with a per-video seq assigned in the same transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

from livecomments.model import Comment, NewComment
from livecomments.storage.errors import CommentDeleted, IdempotencyKeyReused, StorageError

OnCommit = Callable[[float, int], None]  # (seconds the commit took, posts in its batch)
MAX_PENDING_POSTS = 4096
MAX_SLOW_MODE_S = 86_400  # the longest slow mode: a last post older than this limits nothing


class CommentLog(Protocol):
    """Durable comment history: the video's ordered log (comments, delete entries) and its head.

    Guarantees: `add` returns only after the comment is committed; seq is per video,
    starts at 1 and is contiguous, and never restarts (a video's head outlives its
    comments); a retry with the same idempotency key returns the first comment and
    stores nothing new (IdempotencyKeyReused when author or text differ, CommentDeleted
    when that comment was deleted since). Reads see every committed comment. A database
    that cannot be reached raises StorageUnavailable; more than `max_pending` posts
    waiting raises Overloaded.
    """

    cursor_secret: bytes
    """Signs history cursors when none is configured: made once, kept in the database,
    so every writer of one database accepts every other's cursors."""

    async def add(self, new: NewComment, idempotency_key: str | None = None) -> Comment:
        """Store `new` under the next seq of its video. `idempotency_key` is unique per video:
        the caller scopes it to its poster (the HTTP edge prefixes the poster's identity)."""
        ...

    async def page(
        self, video_id: str, *, before: int | None = None, after: int | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[Comment]:
        """`before`: seq < before, newest first. `after`: seq > after, oldest first.
        Neither: newest first from the head, skipping `offset` rows (the slow way)."""
        ...

    async def since(self, video_id: str, seq: int, limit: int) -> list[Comment]:
        """Log entries with seq > `seq`, oldest first, at most `limit`: comments, delete entries,
        and deleted comments (`deleted`, text erased) that keep the seqs contiguous."""
        ...

    async def last_seq(self, video_id: str) -> int:
        """The highest seq the video ever had (kept after retention removed it), 0 if none."""
        ...

    async def last_seqs(self, video_ids: Sequence[str]) -> dict[str, int]:
        """`last_seq` of many videos in one query: every id asked is a key (0 if none)."""
        ...

    not_ready_reason: str
    """Why `healthy` last said no, one line for the operator ("" while healthy)."""

    async def healthy(self) -> bool:
        """Whether a post could be stored now (a cheap probe, bounded in time). After a write failed
        for lack of space (StorageFull) it stays False until a write succeeds again; after the
        database file was lost under the server (StorageLost), until a restart."""
        ...

    def observe_commits(self, hook: OnCommit) -> None:
        """Call `hook` after every committed batch (for /metrics)."""
        ...

    async def close(self) -> None: ...


class Moderation(Protocol):
    """Deletes, bans and slow mode, kept in the database so every writer of it shares them.

    Every time these compare is read from the storage's own clock, never a caller's: writers on
    several machines disagree about the time (a writer 60 s ahead would accept a post 1 s after
    another writer's under slow mode, and not see a 45 s ban), the database is one clock for all
    of them. PostgreSQL: the server's clock, in the deciding statement. SQLite: the machine's."""

    async def delete(self, video_id: str, seq: int, *, by: str, moderator: bool) -> Comment | None:
        """Delete comment `seq` by user `by` in one transaction: returns the delete entry appended
        to the video's log (the next seq), or None if the comment was deleted before. Raises
        NoSuchComment (not a comment of the video) or NotYourComment (not a moderator, not its poster)."""
        ...

    async def erase_user(self, user: str, *, by: str, limit: int) -> tuple[list[Comment], bool]:
        """Delete up to `limit` of `user`'s shown comments, on every video, each as moderator `by`'s
        `delete` would: returns the delete entries appended (each video's in seq order) and whether
        none of the user's comments was left over. Found through an index by user, so a call costs
        O(limit), however many comments the user has. Each comment's delete (mark and entry) is
        whole, so a call that fails halfway leaves some deleted and the rest shown, and the next
        call goes on; a comment deleted meanwhile by someone else is skipped, never deleted twice."""
        ...

    async def ban(self, video_id: str, user: str, ttl_s: float) -> float | None:
        """Ban `user` from posting to the video for `ttl_s` seconds from now on the storage's clock;
        returns when the ban ends (epoch), or None when `ttl_s` <= 0, which lifts the ban."""
        ...

    async def post_policy(self, video_id: str, user: str | None, _now: float | None = None) -> tuple[float | None, int]:
        """One read before a post: when `user`'s ban on the video ends (None: not banned), and its slow_mode_s.
        `_now` is ignored (the storage's clock decides); it stays until edge/videos.py stops passing it."""
        ...

    async def set_slow_mode(self, video_id: str, seconds: int) -> None: ...

    async def moderation_generation(self) -> int:
        """A number every ban, unban and slow-mode change raises once it is stored (in its
        transaction, or right after on DynamoDB): a writer that caches post policies
        (moderation_cache.py) reads it now and then and drops its cache when it moved."""
        ...

    async def claim_slot(self, video_id: str, poster: str, interval: int, key: str | None = None) -> float:
        """Slow mode, atomic across writers: records a post by `poster` now (the storage's clock) unless
        its last was less than `interval` s ago; returns 0 if recorded, else the seconds left to wait.
        A post with the Idempotency-Key `key` of the post that took the slot takes it again
        (its retry must reach storage, which answers with the first comment)."""
        ...


class Retention(Protocol):
    """Housekeeping: what the background sweep (retention.py) removes."""

    async def prune(self, *, keep_comments: int, older_than: float, limit: int) -> int:
        """Delete at most `limit` log entries that retention no longer keeps, in one short
        transaction, and returns how many. By count (`keep_comments` > 0): each video keeps its
        newest `keep_comments` comments that are still shown (not deleted) and every entry after
        the oldest of them (deleted comments, delete entries); the entries before it go. A video
        with fewer shown comments keeps everything. By age (`older_than` > 0): entries created
        before that epoch go. The head stays, so seq never restarts."""
        ...

    async def forget_expired(self) -> None:
        """Drop bans that ended and last posts older than MAX_SLOW_MODE_S (housekeeping), by the
        storage's clock: a writer whose clock runs ahead must not end a ban early."""
        ...


class Storage(CommentLog, Moderation, Retention, Protocol):
    """Everything one database gives (what open_storage returns). Callers annotate with the
    narrow protocol they use; the fan-out core takes the whole."""


def body_hash(new: NewComment) -> bytes:
    """What an Idempotency-Key remembers of its first comment, to refuse a reuse with another body."""
    return hashlib.sha256(b"%s\0%s" % (new.author.encode(), new.text.encode())).digest()[:16]


KEY_REUSED = "this Idempotency-Key was used for another comment"


def key_outcome(new: NewComment, stored_body: bytes | None, comment: Comment | None) -> Comment | StorageError:
    """What a post gets for an Idempotency-Key used before: the first comment, unless the body differs
    (NULL: a key kept before bodies were) or that comment was deleted since (a moderator, its poster).
    Retention drops a key with its comment, so a key whose comment is gone is free again."""
    if stored_body is not None and stored_body != body_hash(new):
        return IdempotencyKeyReused(KEY_REUSED)
    if comment is None or comment.deleted:
        return CommentDeleted("the comment first posted with this Idempotency-Key was deleted")
    return comment
