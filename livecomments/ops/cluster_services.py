"""What `livecomments cluster` starts beside its own processes, from the distribution's packages:
redis-server when the strategy needs it, ZooKeeper for `--registry zk`, and the balancer's binary.

Each service is a cluster Member in a session of its own that dies with the launcher (a
parent-death signal), started by its server class (procs.RedisServer, zk_server.ZooKeeperServer),
which returns only once it answers; a member that dies later is restarted from the same command
line by Member.tend.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from livecomments.ops.members import ClusterError, Member
from livecomments.ops.procs import SBIN_PATH, RedisServer, RedisUnavailable, die_with_parent
from livecomments.ops.services import ServiceUnavailable
from livecomments.ops.zk_server import ZooKeeperServer, zookeeper_argv

__all__ = ["SERVICES", "check_zookeeper", "find_binary", "start_redis", "start_zookeeper"]

# Debian packages that provide each binary we start.
PACKAGES = {"nginx": "nginx", "haproxy": "haproxy", "redis-server": "redis-server"}
SERVICES = ("redis", "zookeeper")  # the members started here, not as livecomments processes


def find_binary(name: str) -> str:
    path = shutil.which(name, path=SBIN_PATH)
    if path is None:
        raise ClusterError(f"{name} is not installed: sudo apt-get install {PACKAGES[name]}")
    return path


def check_zookeeper() -> None:
    """A missing java or ZooKeeper fails before anything starts, as a missing binary does."""
    try:
        zookeeper_argv(Path("zoo.cfg"))  # writes nothing: it only finds java and the jar
    except ServiceUnavailable as e:
        raise ClusterError(str(e)) from None


def start_redis(workdir: Path, port: int, deadline: float) -> Member:
    server = RedisServer(workdir, port)
    redis = Member("redis", server.url, server.argv(), workdir / "redis.log")
    with open(redis.log, "ab") as log:
        try:
            server.start(max(0.1, deadline - time.monotonic()), stdout=log, stderr=log,
                         start_new_session=True, preexec_fn=die_with_parent())
        except RedisUnavailable as e:
            raise ClusterError(f"{e}; see {redis.log}") from None
    redis.proc = server.proc
    return redis


def start_zookeeper(workdir: Path, port: int, deadline: float) -> Member:
    """A standalone ZooKeeper; the member's url is the registry's (chroot /lc)."""
    server = ZooKeeperServer(workdir / "zookeeper", port=port)
    server.workdir.mkdir(parents=True, exist_ok=True)
    member = Member("zookeeper", server.url("lc"), server.argv(), server.log)
    try:
        server.start(max(0.1, deadline - time.monotonic()), start_new_session=True, preexec_fn=die_with_parent())
    except (ServiceUnavailable, OSError) as e:
        raise ClusterError(str(e)) from None
    member.proc = server.proc
    return member
