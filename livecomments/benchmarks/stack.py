"""The processes of one strategy-benchmark case, and what a case is."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from livecomments.benchmarks.common import Process, cpu_seconds, parse_metrics
from livecomments.benchmarks.workload import BALANCE_FACTOR, POLICIES, Workload
from livecomments.ops.zk_server import ZooKeeperServer

SECRET = "bench-cluster-secret"


@dataclass(frozen=True)
class Case:
    label: str  # broadcast, partitioned-64, partitioned-video, dispatcher
    strategy: str
    partitions: int
    policy: str


@dataclass(frozen=True)
class Settings:
    servers: int = 4
    videos: int = 200
    viewers: int = 2000
    rate: float = 100.0
    zipf: float = 1.0
    seed: int = 1
    partitions: int = 64
    warmup: float = 3.0
    duration: float = 15.0
    mode: str = "auto"  # auto | cluster | embedded
    policies: tuple[str, ...] = POLICIES
    balance_factor: float = BALANCE_FACTOR  # policy bounded
    progress: bool = True
    registry: str = "redis"  # the dispatcher's: redis (the broker's redis-server) | zk (a ZooKeeper of its own)

    def workload(self) -> Workload:
        return Workload(self.videos, self.viewers, self.rate, self.zipf, self.seed)


def cases(settings: Settings, only: tuple[str, ...] = ()) -> list[Case]:
    kinds = [
        ("broadcast", "broadcast", 0),
        (f"partitioned-{settings.partitions}", "partitioned", settings.partitions),
        ("partitioned-video", "partitioned", 0),
        ("dispatcher", "dispatcher", 0),
    ]
    return [
        Case(label, strategy, n, policy)
        for policy in settings.policies
        for label, strategy, n in kinds
        if not only or label in only or strategy in only
    ]


def cluster_mode(settings: Settings) -> str:
    if settings.mode != "auto":
        return settings.mode
    return "cluster" if importlib.util.find_spec("livecomments.brokers.redis") else "embedded"


class Stack:
    """The processes of one case; stop() takes them all down whatever happened."""

    def __init__(self, case: Case, settings: Settings, workdir: Path) -> None:
        self.case, self.settings, self.workdir = case, settings, workdir
        self.procs: dict[str, Process] = {}
        self.writer_url = ""
        self.realtime: list[str] = []  # "host:port" of each realtime server, in order
        self.zookeeper: ZooKeeperServer | None = None  # the dispatcher's registry with --registry zk

    def start(self) -> None:
        case, work = self.case, self.workdir
        common = [
            "--strategy",
            case.strategy,
            "--partitions",
            str(case.partitions),
            "--storage",
            f"sqlite:///{work}/lc.db",
            "--log-level",
            "warning",
            "--unwatch-linger",
            "5",
        ]
        if cluster_mode(self.settings) == "embedded":
            extra = ["--registry", "memory://"] if case.strategy == "dispatcher" else []
            proc = self._serve(
                "rt0", ["--role", "both", *common, *extra, "--port", "0", "--server-id", "rt0"]
            )
            self.writer_url = proc.listening().url
            self.realtime = [proc.url.removeprefix("http://")]
            return
        redis = self.procs["redis"] = Process.redis(work)
        common += ["--broker", redis.url]
        if case.strategy == "dispatcher":
            common += ["--registry", self._registry(redis.url), "--cluster-secret", SECRET]
        self._serve("writer", ["--role", "writer", *common, "--port", "0", "--server-id", "writer"])
        for i in range(self.settings.servers):  # --port 0: a port picked beforehand can be taken meanwhile
            self._serve(f"rt{i}", ["--role", "realtime", *common, "--port", "0", "--server-id", f"rt{i}"])
        for proc in self.procs.values():  # all spawned first: they import in parallel
            if proc is not redis:
                proc.listening()
        self.realtime = [self.procs[f"rt{i}"].url.removeprefix("http://") for i in range(self.settings.servers)]
        self.writer_url = self.procs["writer"].url

    def _registry(self, redis_url: str) -> str:
        if self.settings.registry != "zk":
            return redis_url
        self.zookeeper = ZooKeeperServer(self.workdir / "zookeeper").start()
        return self.zookeeper.url()

    def _serve(self, name: str, args: list[str]) -> Process:
        proc = self.procs[name] = Process.serve(args, self.workdir / f"{name}.log")
        return proc

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each process, and of this driver (a saturated client shows here)."""
        return {"driver": cpu_seconds(os.getpid())} | {
            name: cpu_seconds(p.pid) for name, p in self.procs.items()
        }

    async def scrape(self, session: aiohttp.ClientSession) -> list[dict[str, float]]:
        async def one(hostport: str) -> dict[str, float]:
            async with session.get(f"http://{hostport}/metrics") as resp:
                return parse_metrics(await resp.text())

        return list(await asyncio.gather(*(one(h) for h in self.realtime)))

    def stop(self) -> None:
        procs = [p for name, p in self.procs.items() if name != "redis"]
        for proc in procs:  # all at once: each spends its shutdown in parallel
            proc.terminate()
        for proc in procs:
            proc.stop()
        if "redis" in self.procs:  # last: the others' shutdown may still talk to it
            self.procs["redis"].stop()
        if self.zookeeper is not None:
            self.zookeeper.stop()
