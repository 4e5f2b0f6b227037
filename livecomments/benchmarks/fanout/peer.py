"""The peer stack: Starlette + sse-starlette + broadcaster (Redis) under uvicorn.

What a Python user would write from the three projects' READMEs: one broadcaster
subscription per stream (broadcaster multiplexes them onto one Redis channel with a queue
per subscriber), EventSourceResponse around an async generator, and a POST that
publishes to Redis. Run with the interpreter of its own venv (servers.PEER_VENV):

    benchmarks/.venv-peer/bin/python livecomments/benchmarks/fanout/peer.py --port 8082 --redis redis://127.0.0.1:6390/0

Patched (broadcaster 0.3.1 with redis-py 8), in `FixedRedisBackend` below, not in site-packages:
- `subscribe()` set the listener's "ready" event *before* SUBSCRIBE was sent, so the
  listener entered `pubsub.listen()` while nothing was subscribed; redis-py ≥ 5 ends
  `listen()` at once in that state, the listener clears "ready" and waits for a second
  subscribe that never comes: no message is ever delivered. Fixed by setting it after.
- `connect()` started the listener before `pubsub.connect()`; harmless once the above is
  fixed, but it now connects first.
- `disconnect()` closed the connections under a live listener (redis-py 8 then raises in
  the listener task, logged as "Task exception was never retrieved"); it now cancels first.
- `Broadcast.subscribe()` (not redis-specific): when several streams subscribe to a channel
  that has no subscriber yet, each awaits the backend's SUBSCRIBE and then *replaces* the
  channel's queue set with its own, so all but the last stream never receive anything and
  their exit raises KeyError. `FixedBroadcast` registers the queue before awaiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator

import orjson
import uvicorn
from broadcaster import Broadcast, Event
from broadcaster._backends.redis import RedisBackend
from broadcaster._base import Subscriber
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CHANNEL = "hot"


class FixedRedisBackend(RedisBackend):
    async def connect(self) -> None:
        await self._pubsub.connect()
        self._listener = asyncio.create_task(self._pubsub_listener())

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._pubsub.aclose()
        await self._conn.aclose()

    async def subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)
        self._ready.set()


class FixedBroadcast(Broadcast):
    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscriber]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        first = not self._subscribers.get(channel)
        self._subscribers.setdefault(channel, set()).add(queue)
        try:
            if first:
                await self._backend.subscribe(channel)
            yield Subscriber(queue)
        finally:
            self._subscribers[channel].discard(queue)
            if not self._subscribers[channel]:
                del self._subscribers[channel]
                await self._backend.unsubscribe(channel)


def build(redis_url: str) -> Starlette:
    broadcast = FixedBroadcast(backend=FixedRedisBackend(redis_url))
    seq = 0

    async def stream(request: Request) -> EventSourceResponse:
        async def events() -> AsyncIterator[dict[str, object]]:
            async with broadcast.subscribe(CHANNEL) as subscriber:
                yield {"retry": 2000}  # after SUBSCRIBE was sent: the client's barrier
                async for event in subscriber:
                    if event is None:
                        return
                    message = event.message
                    yield {
                        "id": message[message.index('"seq":') + 6 : message.index(',"author"')],
                        "event": "comment",
                        "data": message,
                    }

        return EventSourceResponse(events())

    async def post(request: Request) -> Response:
        nonlocal seq
        body = orjson.loads(await request.body())
        seq += 1
        comment = orjson.dumps(
            {
                "video_id": "hot",
                "seq": seq,
                "author": body["author"],
                "text": body["text"],
                "created_at": time.time(),
            }
        )
        await broadcast.publish(CHANNEL, comment.decode())
        return Response(comment, status_code=201, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await broadcast.connect()
        yield
        await broadcast.disconnect()

    return Starlette(
        routes=[
            Route("/v1/videos/hot/stream", stream),
            Route("/v1/videos/hot/comments", post, methods=["POST"]),
            Route("/healthz", lambda r: Response("ok")),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    print(f"peer listening on http://127.0.0.1:{args.port}", flush=True)
    uvicorn.run(
        build(args.redis),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
