"""etcd v3 registry over etcd's JSON gateway (/v3/...), spoken with aiohttp.

Why not a client library: the maintained asyncio etcd clients are thin and sporadically
released (aetcd, etcd3-py), and the grpc-based ones pull grpcio into a server that already
has aiohttp; the gateway is part of etcd itself (3.4+) and we need five calls of it.

Keys: lc/v/{video}/{nonce} -> advertised URL, attached to this process' lease. etcd deletes
them itself when the lease runs out (a killed server), and a watch on lc/v/ tells writers
of every put and delete, in order, without polling. Viewer counts: lc/n/{video}/{nonce} ->
count, on the same lease, written and read in transactions (one per TXN_OPS videos).

etcd down at start is a degraded start (registry/lease.py); register fails meanwhile, so nothing
is written without a lease.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from livecomments.registry.base import OnChange
from livecomments.registry.lease import LeasedRegistry

log = logging.getLogger(__name__)

PREFIX = "lc/v/"
COUNTS = "lc/n/"
TXN_OPS = 128  # etcd's default --max-txn-ops


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _range_end(prefix: str) -> str:
    """etcd's "every key with this prefix": the prefix with its last byte incremented."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class EtcdRegistry(LeasedRegistry):
    errors = (aiohttp.ClientError, OSError, TimeoutError, KeyError, ValueError)

    def __init__(self, url: str, self_url: str, ttl: float) -> None:
        super().__init__(url, max(2, round(ttl)))  # etcd refuses leases shorter than ~1.5 s
        self._base = "http://" + url.removeprefix("etcd://").rstrip("/")
        self._self_url = self_url
        self._nonce = secrets.token_hex(6)
        self._session: aiohttp.ClientSession | None = None
        self._lease = ""

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:  # a degraded start: no lease, no session yet
            raise ConnectionError(self._reason or f"registry {self._url} not connected")
        async with asyncio.timeout(max(1.0, self._ttl / 3)):
            async with self._session.post(self._base + path, data=orjson.dumps(body)) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise aiohttp.ClientError(f"etcd {path}: {resp.status} {data[:200]!r}")
        result: dict[str, Any] = orjson.loads(data)
        return result

    async def _open(self) -> None:
        session = self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            await self._grant()
        except BaseException:
            self._session = None
            await session.close()
            raise

    async def _grant(self) -> None:
        self._lease = (await self._call("/v3/lease/grant", {"TTL": self._ttl}))["ID"]

    async def _renew(self) -> bool:
        result = (await self._call("/v3/lease/keepalive", {"ID": self._lease})).get("result", {})
        if int(result.get("TTL", 0)) > 0:
            return False
        await self._grant()  # the lease expired (we were away too long): etcd dropped our keys
        return True

    async def _restore(self, videos: list[str]) -> None:
        for video_id in videos:
            await self._put(video_id)

    async def _feed(self, on_change: OnChange, started: Callable[[], None]) -> None:
        """One streaming watch on the whole prefix. The gateway sends one JSON object per
        line; a line past aiohttp's limit (a huge lease expiry) raises ValueError, and the
        reconnect's on_change(None) refreshes everything instead: slower, never wrong."""
        assert self._session is not None
        body = orjson.dumps({"create_request": {"key": _b64(PREFIX), "range_end": _b64(_range_end(PREFIX))}})
        async with self._session.post(self._base + "/v3/watch", data=body) as resp:
            async for line in resp.content:
                result = orjson.loads(line).get("result", {})
                if result.get("created"):
                    started()
                for event in result.get("events", ()):
                    on_change(_unb64(event["kv"]["key"])[len(PREFIX) :].partition("/")[0])

    def _key(self, video_id: str) -> str:
        return f"{PREFIX}{video_id}/{self._nonce}"

    async def _put(self, video_id: str) -> None:
        if not self._lease:  # a key without a lease would outlive us
            raise ConnectionError(self.not_ready_reason)
        body = {"key": _b64(self._key(video_id)), "value": _b64(self._self_url), "lease": self._lease}
        await self._call("/v3/kv/put", body)

    async def register(self, video_id: str) -> None:
        await self._put(video_id)
        self._videos.add(video_id)

    async def deregister(self, video_id: str) -> None:
        self._videos.discard(video_id)
        await self._call("/v3/kv/deleterange", {"key": _b64(self._key(video_id))})

    async def lookup(self, video_id: str) -> frozenset[str]:
        prefix = f"{PREFIX}{video_id}/"
        body = {"key": _b64(prefix), "range_end": _b64(_range_end(prefix))}
        result = await self._call("/v3/kv/range", body)
        return frozenset(_unb64(kv["value"]) for kv in result.get("kvs", ()))

    async def put_counts(self, counts: dict[str, int]) -> None:
        if not self._lease:
            raise ConnectionError(self.not_ready_reason)
        ops: list[dict[str, Any]] = [
            {"request_put": {"key": _b64(f"{COUNTS}{v}/{self._nonce}"), "value": _b64(str(n)), "lease": self._lease}}
            if n else {"request_delete_range": {"key": _b64(f"{COUNTS}{v}/{self._nonce}")}}
            for v, n in counts.items()
        ]
        for i in range(0, len(ops), TXN_OPS):
            await self._call("/v3/kv/txn", {"success": ops[i : i + TXN_OPS]})

    async def counts(self, video_ids: list[str], *, others: bool) -> dict[str, int]:
        totals: dict[str, int] = {}
        for i in range(0, len(video_ids), TXN_OPS):
            part = video_ids[i : i + TXN_OPS]
            ops = [{"request_range": {"key": _b64(f"{COUNTS}{v}/"), "range_end": _b64(_range_end(f"{COUNTS}{v}/"))}}
                   for v in part]
            result = await self._call("/v3/kv/txn", {"success": ops})
            for video_id, response in zip(part, result.get("responses", ()), strict=True):
                kvs = response.get("response_range", {}).get("kvs", ())
                totals[video_id] = sum(int(_unb64(kv["value"])) for kv in kvs
                                       if not (others and _unb64(kv["key"]).endswith("/" + self._nonce)))
        return totals

    async def _release(self) -> None:
        if self._session is not None:
            if self._lease:  # a clean stop removes our keys now instead of after the TTL
                try:
                    await self._call("/v3/lease/revoke", {"ID": self._lease})
                except (aiohttp.ClientError, OSError, TimeoutError) as e:
                    log.warning("revoking the registry lease failed: %s", e)
            await self._session.close()
