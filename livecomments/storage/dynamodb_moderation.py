"""DynamoDB side of moderation: deletes in the video's log, bans, slow mode.

A delete first marks the comment deleted (text erased) with an UpdateItem conditional on it
not being deleted yet, so of two concurrent deletes one goes on; it then appends the delete
entry through the same numbering as posts (dynamodb_log.py), so its seq is contiguous with
theirs across writers. A writer that dies between the two leaves the comment deleted and
hidden, without a delete entry for viewers who saw it live (they lose it on their next load).
Slow mode's claim is one conditional PutItem, atomic across writers. Times are the endpoint's
clock (DynamoLog._now), the one clock every writer shares. Mixed into DynamoStorage.
"""

from __future__ import annotations

import asyncio
import secrets

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from livecomments.model import Comment
from livecomments.storage.base import MAX_SLOW_MODE_S
from livecomments.storage.dynamodb_client import conflict, get_i, get_n, get_s, n, query_all, s
from livecomments.storage.dynamodb_keys import DynamoKeys
from livecomments.storage.dynamodb_log import entry_item
from livecomments.storage.errors import NoSuchComment, NotYourComment


class DynamoModeration(DynamoKeys):
    async def delete(self, video_id: str, seq: int, *, by: str, moderator: bool) -> Comment | None:
        key = {"video_id": s(video_id), "seq": n(seq)}
        item = (await self._call("get_item", TableName=self._t["comments"], Key=key, ConsistentRead=True)).get("Item")
        if item is None or "deletes" in item:
            raise NoSuchComment(f"{video_id} has no comment {seq}")
        if not moderator and get_s(item, "user_id") != by:
            raise NotYourComment(f"comment {seq} of {video_id} is someone else's")
        try:
            await self._call("update_item", TableName=self._t["comments"], Key=key,
                             UpdateExpression="SET #d = :t, #x = :e", ConditionExpression="#d = :f",
                             ExpressionAttributeNames={"#d": "deleted", "#x": "text"},
                             ExpressionAttributeValues={":t": {"BOOL": True}, ":f": {"BOOL": False}, ":e": s("")})
        except ClientError as e:
            if conflict(e):
                return None  # deleted before: nothing new to say
            raise
        entry = Comment(video_id, 0, "", "", self._now(), by, deletes=seq)
        head = await self._put_next(video_id, await self._top(video_id), entry_item(entry, secrets.token_hex(8)))
        await self._raise_head(video_id, head)
        return Comment(video_id, head, "", "", entry.created_at, by, deletes=seq)

    async def ban(self, video_id: str, user: str, ttl_s: float) -> float | None:
        key = {"video_id": s(video_id), "user_id": s(user)}
        if ttl_s <= 0:
            await self._call("delete_item", TableName=self._t["bans"], Key=key)
            return None
        until = self._now() + ttl_s
        await self._call("put_item", TableName=self._t["bans"], Item={**key, "until": n(until)})
        return until

    async def post_policy(self, video_id: str, user: str | None, _now: float | None = None) -> tuple[float | None, int]:
        now = self._now()
        settings = self._call("get_item", TableName=self._t["settings"], Key={"video_id": s(video_id)}, ConsistentRead=True)
        if user is None:
            return None, get_i((await settings).get("Item", {}), "slow_mode_s")
        ban = self._call("get_item", TableName=self._t["bans"], Key={"video_id": s(video_id), "user_id": s(user)},
                         ConsistentRead=True)
        got_settings, got_ban = await asyncio.gather(settings, ban)
        until = get_n(got_ban.get("Item", {}), "until")
        return (until if until is not None and until > now else None), get_i(got_settings.get("Item", {}), "slow_mode_s")

    async def set_slow_mode(self, video_id: str, seconds: int) -> None:
        await self._call("put_item", TableName=self._t["settings"],
                         Item={"video_id": s(video_id), "slow_mode_s": n(seconds)})

    async def forget_expired(self) -> None:
        now = self._now()
        async for ban in query_all(self._client, scan=True, TableName=self._t["bans"], FilterExpression="#u <= :t",
                                   ExpressionAttributeNames={"#u": "until"}, ExpressionAttributeValues={":t": n(now)}):
            await self._forget("bans", {"video_id": ban["video_id"], "user_id": ban["user_id"]}, "#u <= :t",
                               {"#u": "until"}, {":t": n(now)})
        cutoff = now - MAX_SLOW_MODE_S
        async for post in query_all(self._client, scan=True, TableName=self._t["last_posts"], FilterExpression="#a < :t",
                                    ExpressionAttributeNames={"#a": "at"}, ExpressionAttributeValues={":t": n(cutoff)}):
            await self._forget("last_posts", {"video_id": post["video_id"], "poster": post["poster"]}, "#a < :t",
                               {"#a": "at"}, {":t": n(cutoff)})

    async def _forget(self, table: str, key: dict[str, object], condition: str, names: dict[str, str],
                      values: dict[str, object]) -> None:
        """Delete a row still matching `condition` (a ban renewed meanwhile stays)."""
        try:
            await self._call("delete_item", TableName=self._t[table], Key=key, ConditionExpression=condition,
                             ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError as e:
            if not conflict(e):
                raise

    async def claim_slot(self, video_id: str, poster: str, interval: int, key: str | None = None) -> float:
        now = self._now()
        ident = {"video_id": s(video_id), "poster": s(poster)}
        if key is not None:  # the retry of the post that took the slot takes it again
            try:
                await self._call("update_item", TableName=self._t["last_posts"], Key=ident, UpdateExpression="SET #k = :k",
                                 ConditionExpression="#k = :k", ExpressionAttributeNames={"#k": "idem_key"},
                                 ExpressionAttributeValues={":k": s(key)})
                return 0.0
            except ClientError as e:
                if not conflict(e):
                    raise
        item = {**ident, "at": n(now), **({"idem_key": s(key)} if key is not None else {})}
        try:
            await self._call("put_item", TableName=self._t["last_posts"], Item=item,
                             ExpressionAttributeNames={"#a": "at", "#p": "poster"},
                             ConditionExpression="attribute_not_exists(#p) OR #a <= :c",
                             ExpressionAttributeValues={":c": n(now - interval)})
            return 0.0
        except ClientError as e:
            if not conflict(e):
                raise
        got = await self._call("get_item", TableName=self._t["last_posts"], Key=ident, ConsistentRead=True)
        return max(0.001, (get_n(got.get("Item", {}), "at") or now) + interval - now)
