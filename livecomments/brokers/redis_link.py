"""Connections for the Redis broker's subscriber side: one Link per Redis (or cluster master)."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

CONNECT_TIMEOUT = 2.0  # per connection attempt
STOP_TIMEOUT = 2.0  # a task of ours that has not ended this long after its first cancel() is left behind

Slots = list[tuple[int, int, tuple[str, int]]]  # (first slot, last slot, master host:port)


class BrokerUnavailable(ConnectionError):
    """The broker link is down; the message says why."""


def connection_kwargs(url: str, timeout: float) -> tuple[type[AbstractConnection], dict[str, Any]]:
    """redis-py's own URL parsing (rediss://, password, db), with our timeouts and no retries:
    reconnecting is the supervisor's job, so one failure surfaces at once."""
    if url.startswith("redis+cluster://"):
        url = "redis://" + url.removeprefix("redis+cluster://")
    pool = ConnectionPool.from_url(url)
    kwargs = dict(pool.connection_kwargs)
    kwargs.update(
        socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0), health_check_interval=0,
        protocol=3,  # pushes arrive as RESP3 push frames, whatever the client's default
    )
    return pool.connection_class, kwargs


class Link:
    """One subscriber connection and its single reader task (nothing else ever reads it)."""

    def __init__(self, conn: AbstractConnection, name: str) -> None:
        self.conn = conn
        self.name = name
        self.last_seen = 0.0
        self.reader: asyncio.Task[None] | None = None

    async def send(self, *args: str) -> None:
        if not self.conn.is_connected:  # send_command would silently reconnect a new, unsubscribed link
            raise BrokerUnavailable(f"link to {self.name} is closed")
        await self.conn.send_command(*args, check_health=False)

    async def close(self) -> None:
        if self.reader is not None:  # cancel the reader before disconnecting (redis-py#3941)
            await stop_task(self.reader)
        await self.conn.disconnect(nowait=True)


async def stop_task(task: asyncio.Task[Any], timeout: float = STOP_TIMEOUT) -> bool:
    """Cancel `task` and wait until it has ended, cancelling it again while it runs on; whether it
    ended within `timeout`.

    One cancel() is not enough for a task that talks to Redis: redis-py sends every command through
    asyncio.wait_for, and Python 3.11's wait_for returns the command's result and drops a
    cancellation that lands just as the command completes (CPython gh-86296, fixed in 3.12)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(0.1, left))
    if not task.cancelled():
        task.exception()  # retrieved: an error at its end is not reported again as "never retrieved"
    return True


async def cluster_slots(conn_class: type[AbstractConnection], kwargs: dict[str, Any]) -> Slots:
    """The masters and their slot ranges, from CLUSTER SLOTS on the seed node."""
    conn = conn_class(**kwargs)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT + kwargs["socket_timeout"]):
            await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_command("CLUSTER", "SLOTS")
            reply = await conn.read_response()
    finally:
        await conn.disconnect(nowait=True)
    slots = []
    for first, last, master, *_ in reply:
        host = master[0].decode() or str(kwargs["host"])  # empty: the node we asked
        slots.append((int(first), int(last), (host, int(master[1]))))
    return slots
