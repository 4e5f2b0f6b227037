"""DynamoDB plumbing for every DynamoDB module: the URL, the client, the tables, the failures
that mean "unavailable", and items to and from attribute values.

`dynamodb://HOST:PORT/PREFIX` talks plain http to a DynamoDB-compatible endpoint (DynamoDB
Local, moto, ScyllaDB Alternator), `dynamodbs://HOST:PORT/PREFIX` https; `dynamodb:///PREFIX`
uses AWS's regional endpoint with the usual credential chain and AWS_REGION. An explicit
endpoint without credentials in the environment gets dummy ones (emulators want some).
Tables are PREFIX_comments, PREFIX_heads, … created on demand, billed per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from livecomments.storage.errors import StorageUnavailable

Item = dict[str, Any]  # attribute name -> DynamoDB attribute value ({"S": …}, {"N": …}, …)
Client = Any  # aiobotocore's DynamoDB client (untyped)
PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,200}")
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 3.0  # every call is one item or one page: seconds mean the endpoint is gone
TABLE_WAIT_S = 60.0
# name suffix -> (hash key, range key or ""); "N" marks a number key, every other is a string.
TABLES: dict[str, tuple[str, str]] = {
    "comments": ("video_id", "seq:N"),
    "heads": ("video_id", ""),
    "keys": ("video_id", "idem_key"),
    "meta": ("name", ""),
    "bans": ("video_id", "user_id"),
    "settings": ("video_id", ""),
    "last_posts": ("video_id", "poster"),
}
# name suffix -> (index, its hash key): sparse global secondary indexes, holding only the items that
# have the key. `live_user` is a shown comment's poster (removed when it is deleted): erase_user's index.
INDEXES: dict[str, tuple[str, str]] = {"comments": ("live_by_user", "live_user")}
# Codes meaning "the endpoint cannot serve now", not "this request is wrong".
UNAVAILABLE_CODES = {
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
    "LimitExceededException", "TransactionInProgressException",
}


def parse_url(url: str) -> tuple[str | None, str]:
    """(endpoint URL or None for AWS's, table prefix)."""
    parts = urlsplit(url)
    prefix = parts.path.strip("/")
    if not PREFIX.fullmatch(prefix):
        raise ValueError(f"{url!r}: name a table prefix, dynamodb://HOST:PORT/PREFIX or dynamodb:///PREFIX")
    if not parts.netloc:
        return None, prefix
    scheme = "https" if parts.scheme == "dynamodbs" else "http"
    return f"{scheme}://{parts.netloc}", prefix


def code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def conflict(e: Exception) -> bool:
    """A conditional write that found the item otherwise: someone else got there first."""
    return isinstance(e, ClientError) and code(e) == "ConditionalCheckFailedException"


@contextlib.asynccontextmanager
async def translated() -> AsyncIterator[None]:
    try:
        yield
    except ClientError as e:
        if code(e) in UNAVAILABLE_CODES:
            raise StorageUnavailable(f"DynamoDB: {code(e)}") from e
        raise
    except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as e:  # refused, reset, timed out
        raise StorageUnavailable(f"DynamoDB: {type(e).__name__}: {e}") from e


async def open_client(url: str, stack: contextlib.AsyncExitStack) -> tuple[Client, str]:
    """A client for the URL's endpoint, closed with `stack`; and the table prefix."""
    endpoint, prefix = parse_url(url)
    options: dict[str, Any] = {}
    if endpoint is not None:
        options = {
            "endpoint_url": endpoint,
            "aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", "livecomments"),
            "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "livecomments"),
        }
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = AioConfig(
        connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, max_pool_connections=32,
        retries={"total_max_attempts": 2, "mode": "standard"},  # an outage is told fast, not retried for long
    )
    client = await stack.enter_async_context(
        _session().create_client("dynamodb", region_name=region, config=config, **options))
    return client, prefix


_SESSION: list[Any] = []


def _session() -> Any:
    """One botocore session per process: its loader parses the DynamoDB service model once, not per open."""
    if not _SESSION:
        _SESSION.append(get_session())
    return _SESSION[0]


async def create_tables(client: Client, prefix: str) -> None:
    """Create the missing tables (several processes may race: one wins, the others see it in use)."""
    async with translated():
        await asyncio.gather(*(_create(client, f"{prefix}_{name}", keys, INDEXES.get(name))
                               for name, keys in TABLES.items()))


async def _create(client: Client, table: str, keys: tuple[str, str], index: tuple[str, str] | None) -> None:
    schema, attributes = [], []
    for key, role in zip(keys, ("HASH", "RANGE"), strict=True):
        if key:
            name, _, kind = key.partition(":")
            schema.append({"AttributeName": name, "KeyType": role})
            attributes.append({"AttributeName": name, "AttributeType": kind or "S"})
    indexes = {} if index is None else {"GlobalSecondaryIndexes": [_index(*index)]}
    if index is not None:
        attributes.append({"AttributeName": index[1], "AttributeType": "S"})
    try:
        made = await client.create_table(TableName=table, KeySchema=schema, AttributeDefinitions=attributes,
                                         BillingMode="PAY_PER_REQUEST", **indexes)
        status = made["TableDescription"]["TableStatus"]
        index = None  # made with it
    except ClientError as e:
        if code(e) != "ResourceInUseException":
            raise
        status = ""
    async with asyncio.timeout(TABLE_WAIT_S):  # AWS takes seconds to make a table ACTIVE
        while status != "ACTIVE":
            status = (await client.describe_table(TableName=table))["Table"]["TableStatus"]
            if status != "ACTIVE":
                await asyncio.sleep(0.5)
    if index is not None:
        await _add_index(client, table, index)


def _index(name: str, key: str) -> dict[str, Any]:
    return {"IndexName": name, "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"}}


async def _add_index(client: Client, table: str, index: tuple[str, str]) -> None:
    """A table made before the index gets it (its old items are indexed by a backfill of ours, as
    they lack the key: DynamoStorage._index_old_comments); waits until the index is ACTIVE."""
    async with asyncio.timeout(TABLE_WAIT_S):
        while True:
            described = (await client.describe_table(TableName=table))["Table"]
            status = {i["IndexName"]: i.get("IndexStatus") for i in described.get("GlobalSecondaryIndexes", [])}
            if status.get(index[0]) == "ACTIVE":
                return
            if index[0] not in status:
                try:
                    await client.update_table(
                        TableName=table, AttributeDefinitions=[{"AttributeName": index[1], "AttributeType": "S"}],
                        GlobalSecondaryIndexUpdates=[{"Create": _index(*index)}])
                except ClientError as e:  # another process is adding it: wait for theirs
                    if code(e) not in ("ResourceInUseException", "ValidationException", "LimitExceededException"):
                        raise
            await asyncio.sleep(0.5)


def s(value: str) -> Item:
    return {"S": value}


def n(value: float) -> Item:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def get_s(item: Item, name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value["S"])


def get_n(item: Item, name: str) -> float | None:
    value = item.get(name)
    return None if value is None else float(value["N"])


def get_i(item: Item, name: str) -> int:
    value = item.get(name)
    return 0 if value is None else int(value["N"])


async def query_all(client: Client, **request: Any) -> AsyncIterator[Item]:
    """Every item a Query (or Scan, with `scan=True`) finds, page after page."""
    scan = request.pop("scan", False)
    while True:
        async with translated():
            page = await (client.scan(**request) if scan else client.query(**request))
        for item in page.get("Items", []):
            yield item
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
