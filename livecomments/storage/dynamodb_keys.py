"""Idempotency keys on DynamoDB: the first comment wins, across writers, without a transaction.

A post with a key first claims it: PutItem of PREFIX_keys (video_id, idem_key) with its body
hash and the post's random `tok`, conditional on the key being new. Only the claimant numbers
a comment for the key (its entry carries the key), then points the key at the seq (conditional
on still holding the claim). Another post with that key finds the claim: pointed, it gets the
first comment (base.key_outcome); still pending, it waits for the claimant until the claim is
LEASE_S old (its `at`, on the endpoint's clock: a retry that comes late waits only the rest).
A claim still pending after that is a dead writer's, or one whose entry's write failed with
the outcome unknown (a timeout after the request was sent: DynamoStorage._store keeps such a
claim rather than releasing it): the waiter first looks for an entry stored under the key by
that claimant (it died or failed before pointing the key) and adopts it, so a retry after a
lost answer gets the comment that was stored, with its seq; else it takes the claim over.
While a batch stores, its claims are restamped every third of the lease (_keep_claims), so the
lease measures a stalled writer, not a busy one's batch (a hot video's posts are numbered one after
another, and a long batch on a loaded endpoint outlasts the lease). Not while it claims: two
writers, each waiting for a key the other claimed, are freed by the lease running out.
A claimant that finds its claim taken over after storing (it stalled past the lease) erases
its entry (a deleted one keeps seq contiguous) and answers 503: the post it retries gets the
first comment, so a key never shows two comments. Not fenced (no transaction): a write the
endpoint holds past the lease and applies after the take-over, and a dead claimant's entry
more than ORPHAN_SCAN entries deep when the take-over looks.
"""

from __future__ import annotations

import asyncio
import time

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from livecomments.model import NewComment
from livecomments.storage.base import body_hash, key_outcome
from livecomments.storage.dynamodb_client import Item, conflict, get_i, get_n, n, query_all, s
from livecomments.storage.dynamodb_log import DynamoLog, entry
from livecomments.storage.group_commit import Outcome

LEASE_S = 10.0  # how long a pending claim is waited for before its writer is taken for dead
POLL_S = 0.02
ORPHAN_SCAN = 1000  # newest entries searched for a dead claimant's comment


class DynamoKeys(DynamoLog):
    async def _claim_key(self, new: NewComment, key: str, tok: str) -> Outcome | None:
        """None: the key is this post's now (claimed with `tok`); else what the post gets."""
        ident = {"video_id": s(new.video_id), "idem_key": s(key)}
        seen: float | None = None  # when this post first found the claim pending
        while True:
            try:
                await self._call("put_item", TableName=self._t["keys"], ExpressionAttributeNames={"#k": "idem_key"},
                                 Item={**ident, "body": {"B": body_hash(new)}, "tok": s(tok), "at": n(self._now())},
                                 ConditionExpression="attribute_not_exists(#k)")
                return None
            except ClientError as e:
                if not conflict(e):
                    raise
            got = (await self._call("get_item", TableName=self._t["keys"], Key=ident, ConsistentRead=True)).get("Item")
            if got is None:
                continue  # released (its post failed) or pruned since: claim it again
            if "seq" in got:
                return await self._outcome(new, got)
            if got["tok"]["S"] == tok:
                return None  # our own claim, its first answer lost
            seen = seen or time.monotonic()
            if self._leased(got, seen):
                await asyncio.sleep(POLL_S)  # the claimant is storing: its answer is ours
                continue
            if await self._take_over(new.video_id, key, got["tok"]["S"], tok):
                return None
            seen = None

    def _leased(self, claim: Item, seen: float) -> bool:
        """Whether a pending claim's claimant may still be storing: for LEASE_S from the claim's
        `at`, or, for a claim without one (written before `at` was), from when it was `seen`."""
        at = get_n(claim, "at")
        if at is None:
            return time.monotonic() < seen + LEASE_S
        return self._now() < at + LEASE_S

    async def _outcome(self, new: NewComment, claim: Item) -> Outcome:
        got = await self._call("get_item", TableName=self._t["comments"], ConsistentRead=True,
                               Key={"video_id": claim["video_id"], "seq": claim["seq"]})
        body = claim["body"]["B"] if "body" in claim else None
        return key_outcome(new, body, entry(got["Item"]) if "Item" in got else None)

    async def _take_over(self, video_id: str, key: str, dead: str, tok: str) -> bool:
        """Point a dead claimant's key at the entry it stored, if any (False), else claim it for `tok`."""
        seen = 0
        async for item in query_all(
            self._client, TableName=self._t["comments"], KeyConditionExpression="video_id = :v",
            ExpressionAttributeValues={":v": s(video_id)}, ScanIndexForward=False, Limit=200, ConsistentRead=True,
        ):
            seen += 1
            if item.get("idem_key") == s(key) and item.get("tok") == s(dead):
                await self._point_key(video_id, key, get_i(item, "seq"), dead)
                return False
            if seen >= ORPHAN_SCAN:
                break
        try:
            await self._call("update_item", TableName=self._t["keys"], Key={"video_id": s(video_id), "idem_key": s(key)},
                             UpdateExpression="SET #t = :mine, #a = :at",
                             ConditionExpression="#t = :dead AND attribute_not_exists(#q)",
                             ExpressionAttributeNames={"#t": "tok", "#q": "seq", "#a": "at"},
                             ExpressionAttributeValues={":mine": s(tok), ":dead": s(dead), ":at": n(self._now())})
        except ClientError as e:
            if not conflict(e):
                raise
            return False  # someone else moved first: look again
        return True

    async def _point_key(self, video_id: str, key: str, seq: int, tok: str) -> bool:
        """Point the key at `seq` while `tok` still holds it; False: the claim was taken over."""
        try:
            await self._call("update_item", TableName=self._t["keys"], Key={"video_id": s(video_id), "idem_key": s(key)},
                             UpdateExpression="SET #q = :s", ConditionExpression="#t = :t",
                             ExpressionAttributeNames={"#q": "seq", "#t": "tok"},
                             ExpressionAttributeValues={":s": n(seq), ":t": s(tok)})
        except ClientError as e:
            if not conflict(e):
                raise
            return False
        return True

    async def _keep_claims(self, claims: list[tuple[str, str, str]]) -> None:
        """Restamp the (video, key, tok) claims a batch holds now and every LEASE_S / 3 until cancelled
        (when the batch is stored): the lease then measures a stalled writer, not a busy one's batch. A
        claim taken over meanwhile, or already pointed, is left alone by the condition."""
        while True:
            await asyncio.gather(*(self._renew_claim(v, k, t) for v, k, t in claims), return_exceptions=True)
            await asyncio.sleep(LEASE_S / 3)

    async def _renew_claim(self, video_id: str, key: str, tok: str) -> None:
        try:
            await self._call("update_item", TableName=self._t["keys"], Key={"video_id": s(video_id), "idem_key": s(key)},
                             UpdateExpression="SET #a = :at", ConditionExpression="#t = :t AND attribute_not_exists(#q)",
                             ExpressionAttributeNames={"#a": "at", "#t": "tok", "#q": "seq"},
                             ExpressionAttributeValues={":at": n(self._now()), ":t": s(tok)})
        except ClientError as e:
            if not conflict(e):
                raise

    async def _release_key(self, video_id: str, key: str, tok: str) -> None:
        """Free a claim whose post was not stored (best effort: a retry takes it over after the lease)."""
        try:
            await self._call("delete_item", TableName=self._t["keys"], Key={"video_id": s(video_id), "idem_key": s(key)},
                             ConditionExpression="#t = :t AND attribute_not_exists(#q)",
                             ExpressionAttributeNames={"#q": "seq", "#t": "tok"}, ExpressionAttributeValues={":t": s(tok)})
        except Exception:  # noqa: BLE001 - unreachable endpoint, or the claim moved on: nothing to free
            pass

    async def _erase(self, video_id: str, seq: int) -> None:
        """Turn an entry stored for a lost claim into a deleted one: it keeps seq, shows nothing."""
        await self._call("update_item", TableName=self._t["comments"], Key={"video_id": s(video_id), "seq": n(seq)},
                         UpdateExpression="SET #d = :t, #x = :e REMOVE #k",
                         ExpressionAttributeNames={"#d": "deleted", "#x": "text", "#k": "idem_key"},
                         ExpressionAttributeValues={":t": {"BOOL": True}, ":e": s("")})

