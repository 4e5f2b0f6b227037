"""The aiohttp application: components as cleanup contexts, routes by role, run()."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator

from aiohttp import web

from livecomments import internal, realtime, writer
from livecomments.app_keys import CONFIG, HUB, METRICS, SERVER_ID, STORAGE, STRATEGY
from livecomments.config import Config
from livecomments.errors import error_middleware
from livecomments.hub import Hub
from livecomments.metrics import Metrics
from livecomments.storage.base import open_storage
from livecomments.strategies.base import open_strategy

log = logging.getLogger(__name__)


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_body)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[SERVER_ID] = config.server_id
    app.cleanup_ctx.extend([storage_ctx, strategy_ctx])
    app.on_response_prepare.append(add_served_by)
    if config.serves_realtime:
        app.on_shutdown.append(close_streams)
        realtime.add_routes(app)
        if config.strategy == "dispatcher" and not config.internal_port:
            internal.add_routes(app, app)
    if config.serves_writer:
        writer.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    app[STORAGE] = await open_storage(config.storage, group_commit=config.group_commit)
    yield
    await app[STORAGE].close()  # after the server stopped: every acknowledged post is committed


async def strategy_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    strategy = app[STRATEGY] = open_strategy(config, app[METRICS])
    hub = None
    if config.serves_realtime:
        hub = app[HUB] = Hub(
            app[STORAGE], strategy, app[METRICS], backlog_limit=config.backlog_limit,
            linger=config.unwatch_linger, ping_interval=config.ping_interval,
            batch_ms=config.batch_ms, batch_adaptive=config.batch_adaptive,
            batch_hot=config.batch_hot,
        )
        await strategy.start(hub.deliver, hub.resync)
        hub.start()
    else:
        await strategy.start(None, lambda: None)
    yield
    if hub is not None:
        await hub.close()
    await strategy.close()


async def close_streams(app: web.Application) -> None:
    """End every stream at shutdown, so open SSE connections do not hold it for shutdown_timeout."""
    app[HUB].close_viewers()


async def add_served_by(request: web.Request, response: web.StreamResponse) -> None:
    server_id = request.app[SERVER_ID]
    if not server_id and request.transport is not None:
        host, port = request.transport.get_extra_info("sockname")[:2]
        server_id = f"{host}:{port}"
    response.headers["X-Served-By"] = server_id


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    strategy = request.app[STRATEGY]
    if not strategy.ready:
        reason = strategy.not_ready_reason or "not ready"
        return web.json_response({"status": "not_ready", "reason": reason}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def run(config: Config) -> None:
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))


async def serve(config: Config) -> None:
    # Bind first: with --port 0 the advertised URL (dispatcher pushes) is known only now.
    public = _bind(config.host, config.port)
    private = None
    if config.strategy == "dispatcher" and config.serves_realtime and config.internal_port:
        private = _bind(config.host, config.internal_port)
    if config.strategy == "dispatcher" and not config.advertise_url:
        host, port = (private or public).getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        config = config.replace(advertise_url=f"http://{host}:{port}")
    app = create_app(config)
    runner = web.AppRunner(
        app, handler_cancellation=True, shutdown_timeout=config.shutdown_timeout, access_log=None,
    )
    await runner.setup()
    internal_runner = None
    try:
        if private is not None:  # /internal/v1/deliver alone on its own port
            internal_app = web.Application(middlewares=[error_middleware])
            internal.add_routes(internal_app, app)
            internal_runner = web.AppRunner(internal_app, access_log=None)
            await internal_runner.setup()
            await web.SockSite(internal_runner, private).start()
        # aiohttp listen()s again with its own backlog (128): keep ours, or a burst of
        # reconnecting viewers overflows it and waits out SYN retransmits (1 s, 3 s).
        await web.SockSite(runner, public, backlog=1024).start()
        host, port = public.getsockname()[:2]
        print(f"livecomments {config.role} ({config.strategy}) listening on http://{host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        if internal_runner is not None:
            await internal_runner.cleanup()
        await runner.cleanup()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)
