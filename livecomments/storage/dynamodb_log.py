"""The DynamoDB log's numbering, shared by posts and delete entries: no transaction needed.

A log entry is one item of PREFIX_comments keyed (video_id, seq), and it *is* the seq's
claim: it is written with PutItem conditional on `attribute_not_exists(seq)`, so two
writers can never store two entries under one seq (no duplicate). A writer writes seq
n + 1 only after it has seen an entry at n (or a head of n), and its entries of one video
go one after another, each after the previous one landed: whatever instant a writer dies
at, what it stored is a run right after what was there, so no hole. A writer that loses
a seq to another re-reads the top and tries the next; one that finds at n + 1 the entry it
wrote itself (a retried request whose first answer was lost: each entry carries its post's
random `tok`) takes it as its own, so a retry never stores a comment twice.

PREFIX_heads keeps each video's highest seq, raised after each batch and before retention
deletes anything, so seq never restarts after retention. It can lag a writer that died
between its entries and its head update; the top is therefore the newest entry (a Query)
read *before* the head (whatever retention deletes in between, it raised the head first).

This uses PutItem, GetItem, UpdateItem, DeleteItem, Query, Scan, BatchGetItem and
conditional expressions only: all of them ScyllaDB's Alternator implements (with
`alternator_write_isolation` set; conditional writes use LWT), so the same URL serves a
Scylla cluster. TransactWriteItems, which Alternator does not implement, is not used.
"""

from __future__ import annotations

import contextlib
import time
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from livecomments.model import Comment
from livecomments.storage.dynamodb_client import Client, Item, conflict, get_i, get_n, get_s, n, s, translated

SEQ = {"#q": "seq"}


def entry(item: Item) -> Comment:
    return Comment(
        video_id=get_s(item, "video_id") or "", seq=get_i(item, "seq"), author=get_s(item, "author") or "",
        text=get_s(item, "text") or "", created_at=get_n(item, "created_at") or 0.0, user=get_s(item, "user_id"),
        deletes=get_i(item, "deletes"), deleted=bool(item.get("deleted", {}).get("BOOL", False)),
    )


def entry_item(c: Comment, tok: str, key: str | None = None) -> Item:
    """Everything of an entry but its seq (numbering adds it)."""
    item: Item = {"video_id": s(c.video_id), "author": s(c.author), "text": s(c.text),
                  "created_at": n(c.created_at), "deleted": {"BOOL": False}, "tok": s(tok)}
    if c.user is not None:
        item["user_id"] = s(c.user)
        if not c.deletes:  # a shown comment of its user: in the index erase_user reads, until deleted
            item["live_user"] = s(c.user)
    if c.deletes:
        item["deletes"] = n(c.deletes)
    if key is not None:
        item["idem_key"] = s(key)
    return item


class DynamoLog:
    """Numbering over the storage's client and tables (mixed into DynamoStorage)."""

    _client: Client
    _t: dict[str, str]

    _clock_offset = 0.0

    async def _call(self, op: str, **request: Any) -> Any:
        async with translated():
            response = await getattr(self._client, op)(**request)
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if date:
            with contextlib.suppress(TypeError, ValueError):
                # The header has whole seconds: the endpoint's time is within [date, date + 1).
                offset = parsedate_to_datetime(date).timestamp() + 0.5 - time.time()
                self._clock_offset = offset if abs(offset) > 1.0 else 0.0
        return response

    def _now(self) -> float:
        """The endpoint's clock, as its last answer's Date header told it (to the second; this
        machine's clock when they agree to within that): the one clock all writers share."""
        return time.time() + self._clock_offset

    async def _top(self, video_id: str) -> int:
        """The video's highest seq: its newest entry, then its head (in that order: see above)."""
        page = await self._call(
            "query", TableName=self._t["comments"], KeyConditionExpression="video_id = :v",
            ExpressionAttributeValues={":v": s(video_id)}, ScanIndexForward=False, Limit=1,
            ConsistentRead=True, ProjectionExpression="#q", ExpressionAttributeNames=SEQ,
        )
        newest = get_i(page["Items"][0], "seq") if page.get("Items") else 0
        head = await self._call("get_item", TableName=self._t["heads"], Key={"video_id": s(video_id)},
                                ConsistentRead=True)
        return max(newest, get_i(head.get("Item", {}), "seq"))

    async def _put_next(self, video_id: str, top: int, item: Item) -> int:
        """Store `item` under the first free seq after `top` (the video's top as last seen); returns it."""
        while True:
            seq = top + 1
            try:
                await self._call("put_item", TableName=self._t["comments"], Item={**item, "seq": n(seq)},
                                 ConditionExpression="attribute_not_exists(#q)", ExpressionAttributeNames=SEQ)
                return seq
            except ClientError as e:
                if not conflict(e):
                    raise
            there = await self._call("get_item", TableName=self._t["comments"], ConsistentRead=True,
                                     Key={"video_id": s(video_id), "seq": n(seq)})
            if there.get("Item", {}).get("tok") == item["tok"]:
                return seq  # our own put, retried after its answer was lost
            top = max(seq, await self._top(video_id))

    async def _raise_head(self, video_id: str, seq: int) -> None:
        try:
            await self._call(
                "update_item", TableName=self._t["heads"], Key={"video_id": s(video_id)},
                UpdateExpression="SET #q = :s", ConditionExpression="attribute_not_exists(#q) OR #q < :s",
                ExpressionAttributeNames=SEQ, ExpressionAttributeValues={":s": n(seq)},
            )
        except ClientError as e:
            if not conflict(e):  # a conflict: the head is already there or further
                raise
