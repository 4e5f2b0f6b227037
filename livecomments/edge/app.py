"""The aiohttp application: components as cleanup contexts, routes by role, run()."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web

from livecomments.addresses import parse_networks
from livecomments.backends import open_storage, open_strategy
from livecomments.config import Config, mask_url
from livecomments.core.hub import Hub
from livecomments.edge import cors, internal, moderation, openapi, videos, writer, ws
from livecomments.edge import demo as demo_routes
from livecomments.edge import stream as realtime
from livecomments.edge.access import edge_middleware, served_by
from livecomments.edge.auth import install_authenticator
from livecomments.edge.clientaddr import TRUSTED_PROXIES
from livecomments.edge.errors import error_middleware
from livecomments.edge.keys import CONFIG, HUB, METRICS, METRICS_GATHER, SERVER_ID, STORAGE, STRATEGY
from livecomments.edge.ratelimit import RATE_LIMIT_UNAVAILABLE, RATE_LIMITER, rate_limit_ctx
from livecomments.edge.server import Edge, EdgeRunner, raise_fd_limit
from livecomments.errors import STORAGE_UNAVAILABLE, link_down_code, not_ready_body
from livecomments.logs import setup_logging
from livecomments.metrics import Metrics
from livecomments.storage.retention import run_retention

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 10.0  # past shutdown_timeout, for the components to close (each bounds its own) before we give up


class StartError(RuntimeError):
    """A component cannot start (storage unreachable, …); the message is one line for the user."""


def create_app(config: Config) -> web.Application:
    # edge_middleware: identity, the error shape, metrics and access log, as one layer. CORS preflights
    # inside it, answered before routing's 405: identity never asks an OPTIONS for a token.
    cors_preflight = [cors.preflight_middleware] if config.cors_origins else []
    app = web.Application(middlewares=[edge_middleware, *cors_preflight], client_max_size=config.body_limit)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[SERVER_ID] = config.server_id
    # Every component's cleanup context, in startup order (unwound in reverse): storage, the
    # strategy, the hub (realtime: it watches through the strategy) and the stream gate that admits
    # its viewers, the writer's rate limits. (A worker of `serve --workers` adds its metrics socket.)
    app.cleanup_ctx.extend([storage_ctx, strategy_ctx])
    if config.serves_realtime:
        app.cleanup_ctx.extend([hub_ctx, realtime.stream_gate_ctx])
    if config.serves_writer:
        app.cleanup_ctx.extend([rate_limit_ctx, moderation.policy_cache_ctx])
    _add_identity(app, config)
    app.on_response_prepare.append(add_served_by)
    # The writer's routes first: aiohttp tries the /v1/videos/... routes in the order added, and a
    # post (the most frequent request of a writer) then matches the first it tries.
    if config.serves_writer:
        writer.add_routes(app)
        demo_routes.add_routes(app)
    if config.serves_realtime:
        app.on_shutdown.append(close_streams)
        realtime.add_routes(app)
        ws.add_routes(app)
        if config.strategy == "dispatcher" and not config.internal_port:
            internal.add_routes(app, app)
    videos.add_routes(app)
    openapi.add_routes(app)  # GET /v1/openapi.json, every role
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def _add_identity(app: web.Application, config: Config) -> None:
    """Tokens, rate limits, trusted proxies and CORS (auth.py, ratelimit.py, clientaddr.py, cors.py)."""
    if not install_authenticator(app, config) and config.serves_writer:
        log.warning("posting is open: no auth_jwt_secret or auth_jwt_public_key, anyone may post as anyone")
    app[TRUSTED_PROXIES] = parse_networks(config.trusted_proxies)
    if config.cors_origins:
        cors.install(app, config.cors_origins)


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    try:
        app[STORAGE] = await open_storage(
            config.storage, group_commit=config.group_commit, max_pending=config.max_pending_posts,
        )
    except Exception as e:  # DNS, refused, bad password, unwritable file: name the storage, in one line
        raise StartError(f"cannot open storage {mask_url(config.storage)}: {e or type(e).__name__}") from None
    metrics = app[METRICS]

    def observe_commit(seconds: float, size: int) -> None:
        metrics.storage_commit_seconds.observe(seconds)
        metrics.storage_batch_size.observe(size)

    app[STORAGE].observe_commits(observe_commit)
    retention = None
    if config.serves_writer:  # retention, and housekeeping of bans and slow mode
        retention = asyncio.create_task(run_retention(
            app[STORAGE], keep_comments=config.retention_comments, keep_days=config.retention_days,
            interval=config.retention_interval,
        ))
    yield
    if retention is not None:
        retention.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retention
    await app[STORAGE].close()  # after the server stopped: every acknowledged post is committed


async def strategy_ctx(app: web.Application) -> AsyncIterator[None]:
    """The strategy. A writer-only process starts it here: it publishes and never listens. A
    realtime process starts it in hub_ctx, once there is a hub to deliver to. Closed last,
    after the hub: nothing the hub does at close (unwatch, a last count) finds it gone."""
    config = app[CONFIG]
    strategy = app[STRATEGY] = open_strategy(config, app[METRICS])
    if not config.serves_realtime:
        await strategy.start(None, lambda: None)
    yield
    await strategy.close()


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """The realtime side's hub, on the storage and the strategy opened before it. The strategy
    starts listening here, delivering to the hub; the hub's timers start once it does. At
    cleanup every timer and task of the hub stops before the strategy closes."""
    config, strategy = app[CONFIG], app[STRATEGY]
    hub = app[HUB] = Hub(
        app[STORAGE], strategy, app[METRICS], backlog_limit=config.backlog_limit,
        linger=config.unwatch_linger, ping_interval=config.ping_interval,
        repair_interval=config.repair_interval,
        batch_mode=config.batch_mode, batch_ms=config.batch_ms,
        batch_hot=config.batch_hot, viewers_interval=config.viewers_interval,
    )
    await strategy.start(hub.deliver, hub.resync, hub.counts.on_counts)
    hub.start()
    yield
    await hub.close()


async def close_streams(app: web.Application) -> None:
    """on_shutdown: end every stream (what batching holds is sent first), so open SSE
    connections do not hold the shutdown for shutdown_timeout. The hub closes later, in hub_ctx."""
    app[HUB].close_viewers()


async def add_served_by(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Served-By"] = served_by(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    strategy = request.app[STRATEGY]
    if not strategy.ready:
        expose = request.app[CONFIG].expose_errors
        body = not_ready_body(link_down_code(strategy.name), strategy.not_ready_reason, expose=expose)
        return web.json_response(body, status=503)
    storage = request.app[STORAGE]
    if request.app[CONFIG].serves_writer and not await storage.healthy():  # posts cannot be stored
        detail = storage.not_ready_reason or "storage cannot store comments"
        body = not_ready_body(STORAGE_UNAVAILABLE, detail, expose=request.app[CONFIG].expose_errors)
        return web.json_response(body, status=503)
    limiter = request.app.get(RATE_LIMITER)
    if limiter is not None and await limiter.refusing():  # fail-closed limits, store down: every post gets 503
        body = not_ready_body(RATE_LIMIT_UNAVAILABLE, "the rate-limit store cannot be reached and "
                              "rate_limit_fail_open is off: posts are refused", expose=request.app[CONFIG].expose_errors)
        return web.json_response(body, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    gather = request.app.get(METRICS_GATHER)
    body = await gather() if gather is not None else request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


class Worker(Protocol):
    """What a worker of `serve --workers` (workers.py) brings: the listening socket its supervisor
    made, what to add to the app, and where to say it listens instead of printing it."""

    sock: socket.socket

    def setup(self, app: web.Application) -> None: ...

    def listening(self, line: str) -> None: ...


def run(config: Config, worker: Worker | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    setup_logging(config.log_level, config.log_format)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config, worker))
    else:
        uvloop.run(serve(config, worker))


async def serve(config: Config, worker: Worker | None = None) -> None:
    log.info("open-file limit: %d", raise_fd_limit())
    # Bind first: with --port 0 the advertised URL (dispatcher pushes) is known only now.
    public = worker.sock if worker is not None else bind(config.host, config.port)
    private = None
    # Pushes get a listener of their own, off the public port (see internal.py): internal_port,
    # or a free one when advertise_url does not already say where pushes arrive.
    if config.strategy == "dispatcher" and config.serves_realtime and (config.internal_port or not config.advertise_url):
        private = bind(config.host, config.internal_port)
        config = config.replace(internal_port=private.getsockname()[1])
    if config.strategy == "dispatcher" and not config.advertise_url:
        host, port = (private or public).getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        config = config.replace(advertise_url=f"http://{host}:{port}")
    app = create_app(config)
    if worker is not None:
        worker.setup(app)
    runner = EdgeRunner(
        app, Edge.from_config(config), handler_cancellation=True, keepalive_timeout=config.keepalive_timeout,
        shutdown_timeout=config.shutdown_timeout, access_log=None,
    )
    await runner.setup()
    internal_runner = None
    try:
        if private is not None:  # /internal/v1/deliver alone on its own port
            internal_app = web.Application(middlewares=[error_middleware])
            internal.add_routes(internal_app, app)
            internal_runner = EdgeRunner(internal_app, Edge.from_config(config), access_log=None,
                                         keepalive_timeout=config.keepalive_timeout)
            await internal_runner.setup()
            await web.SockSite(internal_runner, private).start()
            print(f"livecomments pushes accepted on http://{config.host}:{config.internal_port}", flush=True)
        # aiohttp listen()s again with its own backlog (128): keep ours, or a burst of
        # reconnecting viewers overflows it and waits out SYN retransmits (1 s, 3 s).
        await web.SockSite(runner, public, backlog=1024).start()
        host, port = public.getsockname()[:2]
        listening = f"livecomments {config.role} ({config.strategy}) listening on http://{host}:{port}"
        if worker is None:
            print(listening, flush=True)
        else:
            worker.listening(listening)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        _exit_if_stuck(config.shutdown_timeout + SHUTDOWN_GRACE)
        if internal_runner is not None:
            await internal_runner.cleanup()
        await runner.cleanup()


def _exit_if_stuck(limit: float) -> None:
    """The backstop of a stop: exit anyway, with one line, if it has not ended `limit` s from now.

    Each component bounds its own close, but one task anywhere that drops its cancellation (Python
    3.11's asyncio.wait_for can, CPython gh-86296) would hold the cleanup, and asyncio.run's last
    wait for every task, for ever: a process asked to stop that never does. Left armed when serve()
    returns, for that last wait too; a timer on the loop, so it fires whatever the tasks do."""

    def give_up() -> None:
        log.error("shutdown did not finish within %g s; exiting with the rest undone", limit)
        os._exit(1)

    asyncio.get_running_loop().call_later(limit, give_up)


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024, reuse_port=reuse_port)
