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


@pytest.fixture(params=["sqlite", "postgres", "dynamodb"])
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
