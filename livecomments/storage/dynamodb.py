"""DynamoDB storage (and DynamoDB-compatible endpoints: ScyllaDB Alternator, moto, DynamoDB Local).

Tables: PREFIX_comments (video_id, seq) holds the log (comments, delete entries, deleted
comments); PREFIX_heads (video_id) each video's highest seq, kept after retention;
PREFIX_keys (video_id, idem_key) the Idempotency-Keys; PREFIX_meta the cursor secret;
PREFIX_bans, PREFIX_settings, PREFIX_last_posts moderation. Tables are made when missing.

Numbering needs no transaction (dynamodb_log.py): a post's entry is a PutItem conditional
on its seq being free, after reading the top, retried at the next seq on conflict; a
writer's entries of one video land one after another, so a writer killed mid-batch leaves
a run with no hole and no seq twice, and the survivors and a restarted writer go on after
it. Concurrent posts are grouped (group commit); a batch's videos are numbered at once,
each video's posts in order. A post whose entry was stored is answered with it even when
a later post of the batch fails; the others get the failure.

A post with an Idempotency-Key is never stored twice (dynamodb_keys.py): the key is claimed
(conditional PutItem) before any entry is numbered for it, only its claimant numbers one,
and the entry carries the key and the claimant's `tok`. A claim is released (deleted) only
when its post's entry was certainly not written: a failure while the entry's PutItem is in
flight (a timeout or cut connection after the request was sent, which may have landed) keeps
the claim pending. The retry then finds the claim, waits out its lease, finds the entry under
the key and answers with it (same seq); only when no entry carries the key does it take the
claim over and number one. What this cannot fence (no transaction) is a write the endpoint
holds longer than the lease (LEASE_S) and applies after the take-over.

History pages are Queries on the sort key (seq); `offset=` reads and skips, the slow way.
Retention by count finds videos through PREFIX_heads, by age with a Scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from livecomments.model import Comment, NewComment
from livecomments.storage.base import KEY_REUSED, MAX_PENDING_POSTS, OnCommit, Storage, body_hash
from livecomments.storage.dynamodb_client import Client, create_tables, get_i, get_s, n, open_client, query_all, s
from livecomments.storage.dynamodb_log import SEQ, entry, entry_item
from livecomments.storage.dynamodb_moderation import DynamoModeration
from livecomments.storage.errors import IdempotencyKeyReused, StorageError, StorageUnavailable
from livecomments.storage.group_commit import GroupCommit, Outcome, Post

PROBE_TIMEOUT_S = 2.0
BATCH_GET = 100  # keys per BatchGetItem
# History pages show live comments only: neither deleted ones nor the delete entries.
LIVE = "attribute_not_exists(#del) AND #d = :f"


class DynamoStorage(DynamoModeration):
    def __init__(self, client: Client, prefix: str, stack: contextlib.AsyncExitStack,
                 group_commit: bool, max_pending: int) -> None:
        self._client = client
        self._stack = stack
        self._t = {name: f"{prefix}_{name}" for name in
                   ("comments", "heads", "keys", "meta", "bans", "settings", "last_posts")}
        self._group = GroupCommit(self._commit, enabled=group_commit, max_pending=max_pending)
        self.cursor_secret = b""
        self.not_ready_reason = ""

    @classmethod
    async def open_url(cls, url: str, *, group_commit: bool = True, max_pending: int = MAX_PENDING_POSTS) -> DynamoStorage:
        stack = contextlib.AsyncExitStack()
        try:
            client, prefix = await open_client(url, stack)
            await create_tables(client, prefix)
            self = cls(client, prefix, stack, group_commit, max_pending)
            self.cursor_secret = await self._secret()
            await self._index_old_comments()  # once: tables made before erase_user's index
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def _secret(self) -> bytes:
        with contextlib.suppress(ClientError):  # a conflict: another writer made it first
            await self._call("put_item", TableName=self._t["meta"], ConditionExpression="attribute_not_exists(#n)",
                             Item={"name": s("cursor_secret"), "value": s(secrets.token_hex(32))},
                             ExpressionAttributeNames={"#n": "name"})
        got = await self._call("get_item", TableName=self._t["meta"], Key={"name": s("cursor_secret")}, ConsistentRead=True)
        return bytes.fromhex(got["Item"]["value"]["S"])

    async def add(self, new: NewComment, idempotency_key: str | None = None) -> Comment:
        return await self._group.add(new, idempotency_key)

    def observe_commits(self, hook: OnCommit) -> None:
        self._group.on_commit = hook

    async def _commit(self, batch: list[Post]) -> list[Outcome]:
        out: list[Outcome | None] = [None] * len(batch)
        toks = [secrets.token_hex(8) for _ in batch]
        first: dict[tuple[str, str], int] = {}  # (video, key) -> the batch's first post with it
        for i, (new, key) in enumerate(batch):
            if key is not None:
                first.setdefault((new.video_id, key), i)
        claims = await asyncio.gather(*(self._claim_key(batch[i][0], k, toks[i]) for (_, k), i in first.items()),
                                      return_exceptions=True)
        for i, claim in zip(first.values(), claims, strict=True):
            if isinstance(claim, BaseException) and not isinstance(claim, StorageError):
                raise claim
            out[i] = claim  # a failed claim (it may have landed) stays as it is: the lease frees it
        held = [(v, k, toks[i]) for (v, k), i in first.items() if out[i] is None]
        if not held:
            return await self._store_all(batch, toks, first, out)
        # While it stores, the batch keeps its claims fresh: a hot video's posts are numbered one after
        # another, and a long batch is a busy writer, not a dead one. Not while it claims: two writers
        # each waiting for a key the other holds are freed by the lease running out.
        keeper = asyncio.create_task(self._keep_claims(held))
        try:
            return await self._store_all(batch, toks, first, out)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _store_all(self, batch: list[Post], toks: list[str], first: dict[tuple[str, str], int],
                         out: list[Outcome | None]) -> list[Outcome]:
        videos: dict[str, list[int]] = {}
        for i, (new, key) in enumerate(batch):
            if out[i] is None and (key is None or first[(new.video_id, key)] == i):
                videos.setdefault(new.video_id, []).append(i)
        now = self._now()
        results = await asyncio.gather(*(self._store(v, batch, toks, posts, now, out) for v, posts in videos.items()),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, StorageError):
                raise result
        for i, (new, key) in enumerate(batch):  # a key repeated within the batch follows its first post
            if out[i] is None and key is not None and first[(new.video_id, key)] != i:
                j = first[(new.video_id, key)]
                out[i] = out[j] if body_hash(new) == body_hash(batch[j][0]) else IdempotencyKeyReused(KEY_REUSED)
        if any(o is None for o in out):  # every post is answered, or the whole batch fails
            raise RuntimeError("commit left posts unanswered")
        return [o for o in out if o is not None]

    async def _store(self, video_id: str, batch: list[Post], toks: list[str], posts: list[int], now: float,
                     out: list[Outcome | None]) -> None:
        """Number and store the video's posts at `posts`, one after another; a failure answers the rest.

        The keys of the posts not stored are released, but never the key of the post whose entry
        was being written when the failure came: its PutItem may have landed with the answer lost
        (a timeout, a dropped connection), and a released key would let its retry number a second
        comment. That claim stays pending; the retry adopts the entry after the lease (dynamodb_keys)."""
        doubt = -1  # the post whose entry may be stored though no answer said so
        try:
            top = await self._top(video_id)
            for i in posts:
                new, key = batch[i]
                doubt = i
                comment = Comment(video_id, 0, new.author, new.text, now, new.user)
                top = await self._put_next(video_id, top, entry_item(comment, toks[i], key))
                if key is not None and not await self._point_key(video_id, key, top, toks[i]):
                    await self._erase(video_id, top)  # stalled past the lease: the key is another's now
                    out[i] = StorageUnavailable("the Idempotency-Key was taken over; retry")
                    continue
                out[i] = Comment(video_id, top, new.author, new.text, now, new.user)
            await self._raise_head(video_id, top)
        except StorageError as e:
            unstored = [i for i in posts if out[i] is None]
            for i in unstored:
                out[i] = e
            await asyncio.gather(*(self._release_key(video_id, key, toks[i]) for i in unstored
                                   if i != doubt and (key := batch[i][1]) is not None))
            raise

    async def prune(self, *, keep_comments: int, older_than: float, limit: int) -> int:
        doomed: list[tuple[str, int]] = []
        if keep_comments > 0:
            doomed += await self._over_count(keep_comments, limit)
        if older_than > 0 and len(doomed) < limit:
            async for item in query_all(self._client, scan=True, TableName=self._t["comments"], ConsistentRead=True,
                                        FilterExpression="created_at < :t", ExpressionAttributeValues={":t": n(older_than)},
                                        ProjectionExpression="video_id, #q", ExpressionAttributeNames=SEQ):
                doomed.append((get_s(item, "video_id") or "", get_i(item, "seq")))
                if len(doomed) >= limit:
                    break
        tops: dict[str, int] = {}
        for video_id, seq in doomed:
            tops[video_id] = max(seq, tops.get(video_id, 0))
        # The head first: once an entry is gone, the head alone keeps seq from restarting.
        await asyncio.gather(*(self._raise_head(v, seq) for v, seq in tops.items()))
        return sum(await asyncio.gather(*(self._drop(v, seq) for v, seq in doomed)))

    async def _drop(self, video_id: str, seq: int) -> int:
        got = await self._call("delete_item", TableName=self._t["comments"], ReturnValues="ALL_OLD",
                               Key={"video_id": s(video_id), "seq": n(seq)})
        old = got.get("Attributes")
        if old is None:
            return 0  # another writer's sweep took it
        key = get_s(old, "idem_key")
        if key is not None:  # retention drops a key with its comment: the key is free again
            with contextlib.suppress(ClientError):
                await self._call("delete_item", TableName=self._t["keys"], ConditionExpression="#q = :s",
                                 Key={"video_id": s(video_id), "idem_key": s(key)},
                                 ExpressionAttributeNames=SEQ, ExpressionAttributeValues={":s": n(seq)})
        return 1

    async def _over_count(self, keep: int, limit: int) -> list[tuple[str, int]]:
        """The entries before each video's `keep`th newest shown comment (retention by count)."""
        doomed: list[tuple[str, int]] = []
        async for head in query_all(self._client, scan=True, TableName=self._t["heads"], ConsistentRead=True):
            video_id, top = get_s(head, "video_id") or "", get_i(head, "seq")
            old = await self._call("query", TableName=self._t["comments"], Limit=1, ConsistentRead=True,
                                   KeyConditionExpression="video_id = :v AND #q <= :c", ExpressionAttributeNames=SEQ,
                                   ExpressionAttributeValues={":v": s(video_id), ":c": n(top - keep)})
            if not old.get("Items"):
                continue  # the keep-th shown comment is at most top - keep + 1: nothing before it
            shown = await self._entries(video_id, forward=False, live=True, limit=keep)
            if len(shown) < keep:
                continue  # fewer shown comments than kept: everything stays
            async for item in query_all(self._client, TableName=self._t["comments"], ConsistentRead=True,
                                        KeyConditionExpression="video_id = :v AND #q < :c", ExpressionAttributeNames=SEQ,
                                        ExpressionAttributeValues={":v": s(video_id), ":c": n(shown[-1].seq)},
                                        ProjectionExpression="#q", Limit=limit):
                doomed.append((video_id, get_i(item, "seq")))
                if len(doomed) >= limit:
                    return doomed
        return doomed

    async def healthy(self) -> bool:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await self._call("get_item", TableName=self._t["meta"], Key={"name": s("cursor_secret")})
        except (StorageUnavailable, TimeoutError) as e:
            self.not_ready_reason = f"DynamoDB endpoint does not answer: {e or type(e).__name__}"
            return False
        self.not_ready_reason = ""
        return True

    async def _entries(self, video_id: str, *, forward: bool, live: bool, limit: int, skip: int = 0,
                       after: int | None = None, before: int | None = None) -> list[Comment]:
        condition, values, names = "video_id = :v", {":v": s(video_id)}, {}
        if after is not None:
            condition, values[":a"], names = condition + " AND #q > :a", n(after), SEQ
        if before is not None:
            condition, values[":b"], names = condition + " AND #q < :b", n(before), SEQ
        request: dict[str, Any] = {"TableName": self._t["comments"], "KeyConditionExpression": condition,
                                   "ScanIndexForward": forward, "ConsistentRead": True, "Limit": max(limit + skip, 25)}
        if live:
            request["FilterExpression"] = LIVE
            names = {**names, "#del": "deletes", "#d": "deleted"}
            values[":f"] = {"BOOL": False}
        if names:
            request["ExpressionAttributeNames"] = names
        found: list[Comment] = []
        if limit <= 0:
            return found
        async for item in query_all(self._client, **request, ExpressionAttributeValues=values):
            if skip:
                skip -= 1
                continue
            found.append(entry(item))
            if len(found) >= limit:
                break
        return found

    async def page(
        self, video_id: str, *, before: int | None = None, after: int | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[Comment]:
        if after is not None:
            return await self._entries(video_id, forward=True, live=True, limit=limit, after=after)
        if before is not None:
            return await self._entries(video_id, forward=False, live=True, limit=limit, before=before)
        return await self._entries(video_id, forward=False, live=True, limit=limit, skip=offset)

    async def since(self, video_id: str, seq: int, limit: int) -> list[Comment]:
        return await self._entries(video_id, forward=True, live=False, limit=limit, after=seq)

    async def last_seq(self, video_id: str) -> int:
        return (await self.last_seqs([video_id]))[video_id]

    async def last_seqs(self, video_ids: Sequence[str]) -> dict[str, int]:
        heads = dict.fromkeys(video_ids, 0)
        ids = list(heads)
        chunks = [ids[i : i + BATCH_GET] for i in range(0, len(ids), BATCH_GET)]
        for found in await asyncio.gather(*(self._heads(chunk) for chunk in chunks)):
            heads.update(found)
        return heads

    async def _heads(self, ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        wanted: dict[str, Any] = {self._t["heads"]: {"Keys": [{"video_id": s(v)} for v in ids], "ConsistentRead": True}}
        while wanted:
            got = await self._call("batch_get_item", RequestItems=wanted)
            for item in got.get("Responses", {}).get(self._t["heads"], []):
                found[get_s(item, "video_id") or ""] = get_i(item, "seq")
            wanted = got.get("UnprocessedKeys") or {}
            if wanted:
                await asyncio.sleep(0.05)  # throttled: DynamoDB asks for a back-off before the rest
        return found

    async def close(self) -> None:
        await self._group.drain()  # posts accepted before shutdown commit first
        await self._stack.aclose()


if TYPE_CHECKING:  # mypy checks here that the backend gives every protocol of base.py
    _IS_STORAGE: type[Storage] = DynamoStorage
