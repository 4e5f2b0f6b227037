"""The floor of the write benchmark: a bare aiohttp + uvloop POST handler.

It does what a writer cannot do without (parse the JSON body, check it is a comment, number it
per video, answer 201 with it as JSON) and nothing else: no storage, no identity, no limits,
no middlewares, no access log. `bench write` drives it with the same posters as livecomments,
pinned alike, so CPU per post of the two on one machine in one run gives the cost of
livecomments over aiohttp's own. `GET /metrics` says how many it answered, in the one line
the benchmark reads (livecomments_comments_stored_total).

`python -m livecomments.benchmarks.bare_writer [--host H] [--port P]` prints "listening on URL".
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiohttp import web

STORED = web.AppKey("stored", list[int])
HEADS = web.AppKey("heads", dict[str, int])


async def post_comment(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not isinstance(body.get("author"), str):
        return web.json_response({"error": {"code": "invalid_body", "message": "not a comment"}}, status=422)
    video_id = request.match_info["video_id"]
    heads = request.app[HEADS]
    seq = heads[video_id] = heads.get(video_id, 0) + 1
    request.app[STORED][0] += 1
    comment = {"video_id": video_id, "seq": seq, "author": body["author"], "text": body["text"],
               "created_at": time.time()}
    return web.Response(body=orjson.dumps(comment), status=201, content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=f"livecomments_comments_stored_total {request.app[STORED][0]}\n")


def create_app() -> web.Application:
    app = web.Application()
    app[STORED], app[HEADS] = [0], {}
    app.router.add_post("/v1/videos/{video_id}/comments", post_comment)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(create_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"bare writer listening on http://{host}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a bare aiohttp+uvloop POST handler (the write benchmark's floor)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
