"""DynamoDB side of moderation: deletes in the video's log, bans, slow mode.

A delete first marks the comment deleted (text erased) with an UpdateItem conditional on it
not being deleted yet, so of two concurrent deletes one goes on; it then appends the delete
entry through the same numbering as posts (dynamodb_log.py), so its seq is contiguous with
theirs across writers. A writer that dies between the two leaves the comment deleted and
hidden, without a delete entry for viewers who saw it live (they lose it on their next load).
Erasing a user reads the user's shown comments from a sparse index (their `live_user`, which the
mark removes), at most `limit` of them, and deletes each as above: each video's one after another,
a few videos at once. A comment posted just before may miss a call (global secondary indexes are
eventually consistent); the next call finds it. Slow mode's claim is one conditional PutItem,
atomic across writers. Every ban, unban and slow-mode change then raises the moderation generation
(an item of PREFIX_meta, ADD 1): after the change, never before, so a writer that sees the new
number and reads again sees the change (no transaction: Alternator has none). Times are the
endpoint's clock (DynamoLog._now), the one clock every writer shares. Mixed into DynamoStorage.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from livecomments.model import Comment
from livecomments.storage.base import MAX_SLOW_MODE_S
from livecomments.storage.dynamodb_client import INDEXES, conflict, get_i, get_n, get_s, n, query_all, s
from livecomments.storage.dynamodb_keys import DynamoKeys
from livecomments.storage.dynamodb_log import entry_item
from livecomments.storage.errors import NoSuchComment, NotYourComment

USER_INDEX, LIVE_USER = INDEXES["comments"]
ERASE_VIDEOS_AT_ONCE = 8
# Shown, not a delete entry: what a delete may still mark (a comment pruned meanwhile fails it too).
SHOWN = "#d = :f AND attribute_not_exists(#del)"
GENERATION = {"name": {"S": "moderation_generation"}}


class DynamoModeration(DynamoKeys):
    async def delete(self, video_id: str, seq: int, *, by: str, moderator: bool) -> Comment | None:
        key = {"video_id": s(video_id), "seq": n(seq)}
        item = (await self._call("get_item", TableName=self._t["comments"], Key=key, ConsistentRead=True)).get("Item")
        if item is None or "deletes" in item:
            raise NoSuchComment(f"{video_id} has no comment {seq}")
        if not moderator and get_s(item, "user_id") != by:
            raise NotYourComment(f"comment {seq} of {video_id} is someone else's")
        if not await self._mark_deleted(video_id, seq):
            return None  # deleted before: nothing new to say
        entry = Comment(video_id, 0, "", "", self._now(), by, deletes=seq)
        head = await self._put_next(video_id, await self._top(video_id), entry_item(entry, secrets.token_hex(8)))
        await self._raise_head(video_id, head)
        return replace(entry, seq=head)

    async def _mark_deleted(self, video_id: str, seq: int) -> bool:
        """Erase a shown comment's text and take it out of the user index; False if it was not shown."""
        try:
            await self._call("update_item", TableName=self._t["comments"], Key={"video_id": s(video_id), "seq": n(seq)},
                             UpdateExpression="SET #d = :t, #x = :e REMOVE #lu", ConditionExpression=SHOWN,
                             ExpressionAttributeNames={"#d": "deleted", "#x": "text", "#lu": LIVE_USER, "#del": "deletes"},
                             ExpressionAttributeValues={":t": {"BOOL": True}, ":f": {"BOOL": False}, ":e": s("")})
        except ClientError as e:
            if conflict(e):
                return False
            raise
        return True

    async def erase_user(self, user: str, *, by: str, limit: int) -> tuple[list[Comment], bool]:
        page = await self._call("query", TableName=self._t["comments"], IndexName=USER_INDEX,
                                KeyConditionExpression="#lu = :u", ExpressionAttributeNames={"#lu": LIVE_USER},
                                ExpressionAttributeValues={":u": s(user)}, Limit=limit + 1)
        found = page.get("Items", [])
        videos: dict[str, list[int]] = {}
        for item in found[:limit]:
            videos.setdefault(get_s(item, "video_id") or "", []).append(get_i(item, "seq"))
        gate = asyncio.Semaphore(ERASE_VIDEOS_AT_ONCE)

        async def erase_from(video_id: str, seqs: list[int]) -> list[Comment]:
            async with gate:
                return await self._erase_from(video_id, sorted(seqs), by)

        erased = await asyncio.gather(*(erase_from(v, seqs) for v, seqs in sorted(videos.items())),
                                      return_exceptions=True)
        for result in erased:
            if isinstance(result, BaseException):
                raise result  # after every video's work ended: nothing left running
        done = len(found) <= limit and "LastEvaluatedKey" not in page  # (a key there: a page cut at 1 MB)
        return [e for entries in erased if not isinstance(entries, BaseException) for e in entries], done

    async def _erase_from(self, video_id: str, seqs: list[int], by: str) -> list[Comment]:
        """Delete those of `seqs` still shown, their entries one after another from the video's top."""
        top, entries = await self._top(video_id), []
        for seq in seqs:
            if await self._mark_deleted(video_id, seq):
                entry = Comment(video_id, 0, "", "", self._now(), by, deletes=seq)
                top = await self._put_next(video_id, top, entry_item(entry, secrets.token_hex(8)))
                entries.append(replace(entry, seq=top))
        if entries:
            await self._raise_head(video_id, top)
        return entries

    async def _index_old_comments(self) -> None:
        """Once per table set: give the shown comments stored before the user index their
        `live_user` (a paged Scan; each update conditional on the comment still being shown, so
        one deleted meanwhile stays out). Every writer may run it at once: it is idempotent."""
        marker = {"name": s("live_user_index")}
        if "Item" in await self._call("get_item", TableName=self._t["meta"], Key=marker, ConsistentRead=True):
            return
        names = {"#d": "deleted", "#del": "deletes", "#lu": LIVE_USER, "#q": "seq"}
        async for item in query_all(self._client, scan=True, TableName=self._t["comments"], ConsistentRead=True,
                                    FilterExpression=f"{SHOWN} AND attribute_exists(user_id) AND attribute_not_exists(#lu)",
                                    ProjectionExpression="video_id, #q, user_id", ExpressionAttributeNames=names,
                                    ExpressionAttributeValues={":f": {"BOOL": False}}):
            try:
                await self._call("update_item", TableName=self._t["comments"],
                                 Key={"video_id": item["video_id"], "seq": item["seq"]},
                                 UpdateExpression="SET #lu = :u", ConditionExpression=SHOWN,
                                 ExpressionAttributeNames={"#d": "deleted", "#del": "deletes", "#lu": LIVE_USER},
                                 ExpressionAttributeValues={":u": item["user_id"], ":f": {"BOOL": False}})
            except ClientError as e:
                if not conflict(e):
                    raise
        await self._call("put_item", TableName=self._t["meta"], Item={**marker, "value": s("1")})

    async def ban(self, video_id: str, user: str, ttl_s: float) -> float | None:
        key = {"video_id": s(video_id), "user_id": s(user)}
        if ttl_s <= 0:
            await self._call("delete_item", TableName=self._t["bans"], Key=key)
            await self._bump()
            return None
        until = self._now() + ttl_s
        await self._call("put_item", TableName=self._t["bans"], Item={**key, "until": n(until)})
        await self._bump()
        return until

    async def _bump(self) -> None:
        await self._call("update_item", TableName=self._t["meta"], Key=GENERATION, UpdateExpression="ADD #g :one",
                         ExpressionAttributeNames={"#g": "generation"}, ExpressionAttributeValues={":one": n(1)})

    async def moderation_generation(self) -> int:
        got = await self._call("get_item", TableName=self._t["meta"], Key=GENERATION, ConsistentRead=True)
        return get_i(got.get("Item", {}), "generation")

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
        await self._bump()

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
