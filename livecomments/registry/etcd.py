"""etcd v3 registry over etcd's JSON gateway (/v3/...), spoken with aiohttp.

Why not a client library: the maintained asyncio etcd clients are thin and sporadically
released (aetcd, etcd3-py), and the grpc-based ones pull grpcio into a server that already
has aiohttp; the gateway is part of etcd itself (3.4+) and we need five calls of it.

Keys: lc/v/{video}/{nonce} -> advertised URL, attached to this process' lease. etcd deletes
them itself when the lease runs out (a killed server), and a watch on lc/v/ tells writers
of every put and delete, in order, without polling.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from typing import Any

import aiohttp
import orjson

from livecomments.registry.base import OnChange, OnReset

log = logging.getLogger(__name__)

PREFIX = "lc/v/"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _range_end(prefix: str) -> str:
    """etcd's "every key with this prefix": the prefix with its last byte incremented."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class EtcdRegistry:
    def __init__(self, url: str, self_url: str, ttl: float) -> None:
        self._base = "http://" + url.removeprefix("etcd://").rstrip("/")
        self._self_url = self_url
        self._nonce = secrets.token_hex(6)
        self._ttl = max(2, round(ttl))  # etcd refuses leases shorter than ~1.5 s
        self._session: aiohttp.ClientSession | None = None
        self._lease = ""
        self._videos: set[str] = set()
        self._lease_until = 0.0  # monotonic
        self._feed_up = True
        self._restoring = False  # a new lease is granted but our videos are not back yet
        self._reason = ""
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        return self._feed_up and not self._restoring and time.monotonic() < self._lease_until

    @property
    def not_ready_reason(self) -> str:
        return self._reason or "registry lease lost"

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        async with asyncio.timeout(max(1.0, self._ttl / 3)):
            async with self._session.post(self._base + path, data=orjson.dumps(body)) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise aiohttp.ClientError(f"etcd {path}: {resp.status} {data[:200]!r}")
        result: dict[str, Any] = orjson.loads(data)
        return result

    async def start(self, on_change: OnChange | None, on_reset: OnReset) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            await self._grant()
        except BaseException:
            await self._session.close()
            raise
        self._tasks.append(asyncio.create_task(self._keep_alive(on_reset)))
        if on_change is not None:
            self._feed_up = False
            watching = asyncio.get_running_loop().create_future()
            self._tasks.append(asyncio.create_task(self._watch(on_change, watching)))
            async with asyncio.timeout(max(2.0, self._ttl)):
                await watching

    async def _grant(self) -> None:
        started = time.monotonic()
        self._lease = (await self._call("/v3/lease/grant", {"TTL": self._ttl}))["ID"]
        self._lease_until = started + self._ttl

    async def _keep_alive(self, on_reset: OnReset) -> None:
        """The one heartbeat of the process, whatever the number of videos."""
        while True:
            await asyncio.sleep(self._ttl / 3)
            started = time.monotonic()
            try:
                result = (await self._call("/v3/lease/keepalive", {"ID": self._lease})).get("result", {})
                if not self._restoring and int(result.get("TTL", 0)) > 0:
                    self._lease_until, self._reason = started + self._ttl, ""
                    continue
                # The lease expired (we were away too long): etcd dropped our keys.
                if not self._restoring:
                    await self._grant()
                    self._restoring = True
                for video_id in list(self._videos):
                    await self._put(video_id)
                self._restoring, self._reason = False, ""
                log.warning("registry lease was lost; re-registered %d videos", len(self._videos))
                on_reset()
            except (aiohttp.ClientError, OSError, TimeoutError, KeyError, ValueError) as e:
                self._reason = f"registry keepalive failed: {e}"
                log.warning("%s", self._reason)

    async def _watch(self, on_change: OnChange, watching: asyncio.Future[None]) -> None:
        """One streaming watch on the whole prefix; on_change(None) after each (re)start,
        since events while we were away are not replayed. The gateway sends one JSON object
        per line; a line past aiohttp's limit (a huge lease expiry) raises ValueError, and
        the reconnect's on_change(None) refreshes everything instead: slower, never wrong."""
        assert self._session is not None
        body = orjson.dumps({"create_request": {"key": _b64(PREFIX), "range_end": _b64(_range_end(PREFIX))}})
        delay = 0.1
        while True:
            try:
                async with self._session.post(self._base + "/v3/watch", data=body) as resp:
                    async for line in resp.content:
                        result = orjson.loads(line).get("result", {})
                        if result.get("created"):
                            self._feed_up, delay = True, 0.1
                            on_change(None)
                            if not watching.done():
                                watching.set_result(None)
                        for event in result.get("events", ()):
                            on_change(_unb64(event["kv"]["key"])[len(PREFIX) :].partition("/")[0])
                raise aiohttp.ClientError("etcd closed the watch")
            except (aiohttp.ClientError, OSError, ValueError, KeyError) as e:
                self._feed_up = False
                self._reason = f"registry watch lost: {e}"
                log.warning("%s", self._reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _key(self, video_id: str) -> str:
        return f"{PREFIX}{video_id}/{self._nonce}"

    async def _put(self, video_id: str) -> None:
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

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            if self._lease:  # a clean stop removes our keys now instead of after the TTL
                try:
                    await self._call("/v3/lease/revoke", {"ID": self._lease})
                except (aiohttp.ClientError, OSError, TimeoutError) as e:
                    log.warning("revoking the registry lease failed: %s", e)
            await self._session.close()
