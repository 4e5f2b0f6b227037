"""The cluster dashboard: a page on a port of its own that `livecomments cluster` serves beside the
cluster (its own thread and event loop, so the launcher's child watching is untouched).

GET /            the page (livecomments/dashboard/: vanilla HTML/CSS/JS, nothing from another host)
GET /api/state   every member's figures (dashboard_stats.Monitor, scraped once a second) and the load run
POST /api/load   start the workload model against the balancer: {videos, viewers, zipf, rate, duration}
DELETE /api/load stop it
Only for the dashboard's own page (guard.py): a foreign Host or Origin is refused, and the two
state-changing calls need the run's token, which the page carries, and a JSON body.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from livecomments.edge.demo import CSP
from livecomments.edge.errors import error_response
from livecomments.errors import dumps
from livecomments.ops.dashboard.guard import Guard, new_token, page_with_token
from livecomments.ops.dashboard.stats import Monitor, Topology
from livecomments.ops.load import LoadRun, LoadSettings

if TYPE_CHECKING:
    from livecomments.ops.cluster import Cluster

FILES = {"index.html": "text/html", "dashboard.css": "text/css", "dashboard.js": "text/javascript"}
POLL_INTERVAL = 1.0  # seconds between scrapes: the rates are per this window


def topology(cluster: Cluster, partitions: int | None) -> Topology:
    redis = ""  # the dispatcher's redis-server is its registry: its traffic is the writers' pushes
    if cluster.strategy != "dispatcher":
        started = next((m.url for m in cluster.members if m.name == "redis"), "")
        redis = started or (cluster.broker_url if (cluster.broker_url or "").startswith("redis://") else "") or ""
    return Topology(cluster.strategy, cluster.policy, partitions, cluster.url,
                    tuple((m.name, m.url) for m in cluster.servers), tuple((m.name, m.url) for m in cluster.writers),
                    redis)


class LoadControl:
    """At most one load run at a time; the last one's progress stays visible after it ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.run: LoadRun | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self, settings: LoadSettings) -> bool:
        if self.task is not None and not self.task.done():
            return False
        self.run = LoadRun(self.url, settings)
        self.task = asyncio.create_task(self.run.run())
        self.task.add_done_callback(_retrieve)  # a failed run shows in its state, not as a loop warning
        return True

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def state(self) -> dict[str, Any] | None:
        return self.run.progress() if self.run else None


MONITOR = web.AppKey("monitor", Monitor)
LOAD = web.AppKey("load", LoadControl)
TOKEN = web.AppKey("token", str)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()






async def page(request: web.Request) -> web.Response:
    name = request.match_info.get("name") or "index.html"
    if name not in FILES:
        return error_response(404, "not_found", f"no {name} here")
    body = (resources.files("livecomments.ops.dashboard") / name).read_bytes()
    if name == "index.html":
        body = page_with_token(body, request.app[TOKEN])
    return web.Response(body=body, headers={"Content-Type": f"{FILES[name]}; charset=utf-8",
                                            "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                            "Cache-Control": "no-cache"})


async def state(request: web.Request) -> web.Response:
    body = request.app[MONITOR].state() | {"load": request.app[LOAD].state()}
    return web.json_response(body, dumps=dumps, headers={"Cache-Control": "no-store"})


async def start_load(request: web.Request) -> web.Response:
    try:
        settings = LoadSettings.from_json(orjson.loads(await request.read()))
    except orjson.JSONDecodeError:
        return error_response(400, "invalid_json", "the body is not JSON")
    except ValueError as e:
        return error_response(400, "invalid_settings", str(e))
    try:  # what LoadRun.run imports: without the bench extra the run would die unseen, "starting" for ever
        from livecomments.benchmarks import common, strategies, strategies_report, viewers, workload  # noqa: F401
    except ImportError as e:
        return error_response(503, "bench_missing",
                              f"load needs the bench extra ({e.name} is missing): pip install 'livecomments[bench]'")
    control = request.app[LOAD]
    if not control.start(settings):
        return error_response(409, "load_running", "a load run is going on: stop it first")
    return web.json_response({"load": control.state()}, status=202, dumps=dumps)


async def stop_load(request: web.Request) -> web.Response:
    control = request.app[LOAD]
    await control.stop()
    return web.json_response({"load": control.state()}, dumps=dumps)


async def _poller(app: web.Application) -> AsyncIterator[None]:
    """Scrape the members once a second for as long as the dashboard runs."""
    async def loop(session: aiohttp.ClientSession) -> None:
        while True:
            await app[MONITOR].poll(session)
            await asyncio.sleep(POLL_INTERVAL)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        task = asyncio.create_task(loop(session))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app[LOAD].stop()


def create_app(topo: Topology, bound_host: str = "127.0.0.1", token: str | None = None) -> web.Application:
    """`bound_host`: where the dashboard listens (a Host it answers to besides the loopback names)."""
    token = token or new_token()
    app = web.Application(middlewares=[Guard(bound_host, token).middleware])
    app[MONITOR], app[LOAD], app[TOKEN] = Monitor(topo), LoadControl(topo.balancer), token
    app.cleanup_ctx.append(_poller)
    app.router.add_get("/", page)
    app.router.add_get("/{name:[a-z]+\\.(?:css|js|html)}", page)
    app.router.add_get("/api/state", state)
    app.router.add_post("/api/load", start_load)
    app.router.add_delete("/api/load", stop_load)
    return app


class DashboardServer:
    """The dashboard in a thread of its own; start() returns its URL once it listens."""

    def __init__(self, topo: Topology, host: str = "127.0.0.1", port: int = 0) -> None:
        self.topology, self.host, self.port = topo, host, port
        self.url = ""
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="dashboard", daemon=True)

    def start(self, timeout: float = 10.0) -> str:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the dashboard did not start in time")
        if self._failure is not None:
            raise self._failure
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported to start(), or it ended after start returned
            self._failure = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(create_app(self.topology, self.host), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            port = runner.addresses[0][1]
            self.url = f"http://{self.host}:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()
