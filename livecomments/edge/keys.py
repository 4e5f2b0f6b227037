"""Typed application keys (a module of their own so handlers and app.py share them without a cycle)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from livecomments.config import Config
from livecomments.metrics import Metrics

if TYPE_CHECKING:
    from livecomments.core.hub import Hub
    from livecomments.storage.base import Storage
    from livecomments.strategies.base import Strategy

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
STORAGE: web.AppKey[Storage] = web.AppKey("storage")
STRATEGY: web.AppKey[Strategy] = web.AppKey("strategy")
HUB: web.AppKey[Hub] = web.AppKey("hub")
SERVER_ID = web.AppKey("server_id", str)
# With `serve --workers`, /metrics answers for every worker, not the one the connection reached (workers.py).
METRICS_GATHER: web.AppKey[Callable[[], Awaitable[bytes]]] = web.AppKey("metrics_gather")
