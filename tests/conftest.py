"""Shared fixtures: real servers on free ports, real sessions."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from livecomments.config import Config
from livecomments.edge.app import create_app
from tests.sse import close_streams

pytest_plugins = [
    "tests.fixtures.processes",
    "tests.fixtures.postgres",
    "tests.fixtures.dynamodb",
    "tests.fixtures.nginx",
    "tests.fixtures.redis_cluster",
    "tests.fixtures.etcd",
    "tests.fixtures.zookeeper",
    "tests.fixtures.stack",
    "tests.fixtures.browser",
]

StartServer = Callable[..., Awaitable[str]]


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    # Rate limits off: tests post fast from loopback; rate-limit tests turn them on.
    base = Config(storage=f"sqlite:///{tmp_path}/lc.db", port=0, unwatch_linger=0.05, rate_limit_per_s=0.0)
    return base.replace(**overrides).validate()


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """start_server(**config overrides) -> base URL of a real server on a free port."""
    servers: list[TestServer] = []
    counter = itertools.count()

    async def start(**overrides: Any) -> str:
        overrides.setdefault("storage", f"sqlite:///{tmp_path}/lc-{next(counter)}.db")
        server = TestServer(create_app(make_config(tmp_path, **overrides)), handler_cancellation=True)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in reversed(servers):
        await server.close()


STORAGES = ("sqlite", "postgres", "dynamodb")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test module may name the backends its `storage_url` tests run on (`STORAGES = (...)`):
    the others are deselected at collection. The suite's time goes where a backend's behaviour can
    differ; what a module re-checks end to end that the contract suite already holds per backend
    need not run on every one."""
    def wanted(item: pytest.Item) -> bool:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("storage_url") if callspec is not None else None
        return backend is None or backend in getattr(item.module, "STORAGES", STORAGES)

    unwanted = [item for item in items if not wanted(item)]
    if unwanted:
        config.hook.pytest_deselected(items=unwanted)
        items[:] = [item for item in items if wanted(item)]


@pytest.fixture(params=STORAGES)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes it runs on a fresh SQLite file, a fresh PostgreSQL database and
    fresh DynamoDB tables (its own table prefix on a moto server)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_server").database())
    if request.param == "dynamodb":
        return str(request.getfixturevalue("dynamodb_server").url())
    return f"sqlite:///{tmp_path}/shared.db"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=30)) as s:
        yield s
        close_streams(s)
