"""Every backend picked by URL scheme, in one table, the strategies by name, and the factories that open them.

The table is what config validation checks a URL against (known scheme, driver installed),
what `--help` and the errors print as the accepted forms, and what the factories below
import: lazily, so an unused driver (an optional extra) need not be installed. Backends
import nothing from here, so this module sits above them without a cycle.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from livecomments.storage.base import MAX_PENDING_POSTS

if TYPE_CHECKING:
    from livecomments.brokers.base import Broker, CountsStore
    from livecomments.config import Config
    from livecomments.metrics import Metrics
    from livecomments.registry.base import Registry
    from livecomments.storage.base import Storage
    from livecomments.strategies.base import Strategy


@dataclass(frozen=True)
class Backend:
    kind: str  # "storage", "broker" or "registry"
    schemes: tuple[str, ...]  # URL prefixes, "scheme://"
    form: str  # the URL as the help and the errors show it
    target: str  # "module:Class"
    extra: str = ""  # the optional extra that installs the driver ("" = always installed)
    driver: str = ""  # the driver's module, imported to check that the extra is installed

    def load(self) -> Any:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


BACKENDS = (
    Backend("storage", ("sqlite://",), "sqlite:///PATH", "livecomments.storage.sqlite:SqliteStorage"),
    Backend("storage", ("postgresql://", "postgres://"), "postgresql://…", "livecomments.storage.postgres:PostgresStorage",
            "postgres", "asyncpg"),
    Backend("storage", ("dynamodb://", "dynamodbs://"), "dynamodb://HOST:PORT/PREFIX",
            "livecomments.storage.dynamodb:DynamoStorage", "dynamodb", "aiobotocore"),
    Backend("broker", ("memory://",), "memory://", "livecomments.brokers.memory:MemoryBroker"),
    Backend("broker", ("redis://", "rediss://"), "redis://HOST:PORT/DB", "livecomments.brokers.redis:RedisBroker",
            "redis", "redis"),
    Backend("broker", ("redis+cluster://",), "redis+cluster://HOST:PORT", "livecomments.brokers.redis:RedisBroker",
            "redis", "redis"),
    Backend("registry", ("memory://",), "memory://", "livecomments.registry.memory:MemoryRegistry"),
    Backend("registry", ("redis://", "rediss://"), "redis://HOST:PORT/DB", "livecomments.registry.redis:RedisRegistry",
            "redis", "redis"),
    Backend("registry", ("etcd://",), "etcd://HOST:PORT", "livecomments.registry.etcd:EtcdRegistry"),
    Backend("registry", ("zk://",), "zk://HOST:PORT[,HOST:PORT]/CHROOT", "livecomments.registry.zookeeper:ZooKeeperRegistry",
            "zookeeper", "kazoo"),
)


def forms(kind: str) -> str:
    """'a, b or c': the URL forms a kind accepts."""
    shown = [b.form for b in BACKENDS if b.kind == kind]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def find(kind: str, url: str) -> Backend | None:
    return next((b for b in BACKENDS if b.kind == kind and url.startswith(b.schemes)), None)


def missing_driver(url: str) -> str:
    """'' when the URL's driver is installed (or it needs none), else the extra that installs it."""
    for backend in BACKENDS:
        if backend.driver and url.startswith(backend.schemes):
            try:
                importlib.import_module(backend.driver)
            except ImportError:
                return backend.extra
            return ""
    return ""


def _backend(kind: str, url: str) -> Backend:
    backend = find(kind, url)
    if backend is None:
        raise ValueError(f"unknown {kind} URL {url!r}: use {forms(kind)}")
    return backend


async def open_storage(url: str, *, group_commit: bool = True, max_pending: int = MAX_PENDING_POSTS) -> Storage:
    storage: Storage = await _backend("storage", url).load().open_url(url, group_commit=group_commit, max_pending=max_pending)
    return storage


def open_broker(url: str) -> Broker:
    broker: Broker = _backend("broker", url).load()(url)
    return broker


def open_registry(url: str, self_url: str, ttl: float) -> Registry:
    registry: Registry = _backend("registry", url).load()(url, self_url, ttl)
    return registry


def open_counts_store(broker_url: str) -> CountsStore | None:
    """Where pub/sub processes keep their viewer counts for the writers: beside a Redis broker
    (hashes on the same Redis); nowhere beside the in-memory broker (one process, whose Hub knows)."""
    broker = find("broker", broker_url)
    if broker is None or broker.driver != "redis":
        return None
    from livecomments.brokers.redis_counts import RedisCountsStore

    return RedisCountsStore(broker_url)


def open_strategy(config: Config, metrics: Metrics) -> Strategy:
    """The configured strategy; pub/sub ones on the configured broker (and the counts store
    beside it), the dispatcher on its registry."""
    if config.strategy == "broadcast":
        from livecomments.strategies.broadcast import BroadcastStrategy

        return BroadcastStrategy(open_broker(config.broker), metrics, open_counts_store(config.broker))
    if config.strategy == "partitioned":
        from livecomments.strategies.partitioned import PartitionedStrategy

        return PartitionedStrategy(open_broker(config.broker), metrics, config.partitions,
                                   open_counts_store(config.broker))
    if config.strategy == "dispatcher":
        from livecomments.strategies.dispatcher import LOCAL, DispatcherStrategy

        registry = open_registry(config.registry, config.advertise_url or LOCAL, config.registry_ttl)
        return DispatcherStrategy(config, metrics, registry)
    raise ValueError(f"unknown strategy {config.strategy!r}")
