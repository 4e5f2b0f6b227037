"""A private ZooKeeper (Debian's `zookeeper` package) on free ports: the one way `cluster
--registry zk` and the tests start it.

Started with java directly: Debian's zkServer.sh reads /etc/zookeeper and writes to /var/log,
and neither a local cluster nor a test wants that. Standalone, or member `myid` of an
ensemble (`peers`: one (quorum port, election port) per member, same order for all). Like
procs.RedisServer, the caller passes its Popen options (a cluster member in its own session
that dies with the launcher, a test fixture killed and restarted on the same port); what is
shared is the command line, the config and the readiness check: ZooKeeper answering `srvr`
with its mode, not merely an open port (an ensemble member listens before it has a leader).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from livecomments.ops.procs import free_port
from livecomments.ops.services import ServiceUnavailable, stop_child, wait_port

__all__ = ["JAR", "ZooKeeperServer", "four_letter", "zookeeper_argv"]

JAR = Path("/usr/share/java/zookeeper.jar")  # its manifest's Class-Path names the other jars
TICK_MS = 250  # sessions of 0.5 to 5 s (ZooKeeper clamps to [2, 20] ticks): a 2 s registry_ttl is granted as asked
INSTALL = "ZooKeeper is not installed: sudo apt-get install zookeeper"


def four_letter(port: int, word: bytes, timeout: float = 1.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(word)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


def zookeeper_argv(config: Path, ensemble: bool = False) -> list[str]:
    """java with a small heap and the quick-start JIT: a test or a laptop runs a few of them."""
    java = shutil.which("java")
    if java is None or not JAR.exists():
        raise ServiceUnavailable(INSTALL)
    main = "org.apache.zookeeper.server." + ("quorum.QuorumPeerMain" if ensemble else "ZooKeeperServerMain")
    return [java, "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", str(JAR), main, str(config)]


class ZooKeeperServer:
    """One ZooKeeper server with its data in `workdir`; stop() kills it (SIGKILL, an outage) and
    start() brings it back on the same ports and data."""

    def __init__(self, workdir: Path, myid: int = 0, peers: list[tuple[int, int]] | None = None,
                 port: int = 0) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.myid, self.peers = myid, peers or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, chroot: str = "lc") -> str:
        return f"zk://{self.hostport}/{chroot}"

    @property
    def log(self) -> Path:
        return self.workdir / "zookeeper.log"

    def config(self) -> Path:
        """Write zoo.cfg (and myid in an ensemble); its path."""
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [f"tickTime={TICK_MS}", f"dataDir={data}", f"clientPort={self.port}",
                 "clientPortAddress=127.0.0.1", "admin.enableServer=false", "4lw.commands.whitelist=ruok,srvr",
                 "initLimit=20", "syncLimit=8", "maxClientCnxns=0"]
        if self.peers:
            (data / "myid").write_text(f"{self.myid}\n")
            lines += [f"server.{i}=127.0.0.1:{q}:{e}" for i, (q, e) in enumerate(self.peers, 1)]
        cfg = self.workdir / "zoo.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    def argv(self) -> list[str]:
        return zookeeper_argv(self.config(), ensemble=bool(self.peers))

    def start(self, timeout: float = 30.0, wait: bool = True, **popen: Any) -> ZooKeeperServer:
        """Spawn (output to zookeeper.log unless `popen` says otherwise) and, with `wait`, return
        once it serves."""
        argv = self.argv()
        with open(self.log, "ab") as log:  # the child keeps its own descriptor
            popen.setdefault("stdin", subprocess.DEVNULL)
            popen.setdefault("stdout", log)
            popen.setdefault("stderr", log)
            self.proc = subprocess.Popen(argv, **popen)
        if wait:
            try:
                self.wait_serving(timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def mode(self) -> str:
        """'standalone', 'leader', 'follower', or '' while not serving."""
        try:
            reply = four_letter(self.port, b"srvr").decode()
        except OSError:
            return ""
        return next((line.split(":", 1)[1].strip() for line in reply.splitlines() if line.startswith("Mode:")), "")

    def wait_serving(self, timeout: float) -> None:
        """Polled (another process offers no event to wait on), bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            wait_port(self.port, timeout, self.proc)
        except TimeoutError:
            raise ServiceUnavailable(f"ZooKeeper did not listen on {self.port} within {timeout:g} s; "
                                     f"see {self.log}") from None
        while not self.mode():
            if self.proc is not None and self.proc.poll() is not None:
                raise ServiceUnavailable(f"ZooKeeper exited with {self.proc.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"ZooKeeper on {self.port} not serving after {timeout:g} s; see {self.log}")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        stop_child(self.proc, (), timeout)
        self.proc = None
