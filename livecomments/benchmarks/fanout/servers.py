"""The servers under test, each started on a free port pinned to the server core."""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from livecomments.benchmarks.common import bench_home, free_port, raise_nofile
from livecomments.ops.lbconfig import Balancer, haproxy_config
from livecomments.ops.procs import SBIN_PATH, RedisServer

HERE = Path(__file__).resolve().parent  # peer.py and its pinned requirements ship with the package
PEER_VENV = bench_home() / ".venv-peer"  # its own venv: the peer's dependencies stay out of ours
PEER_PYTHON = PEER_VENV / "bin" / "python"

# name -> (kind, extra args). livecomments' batch modes are its `batch_mode` and `batch_ms` options.
BATCH20 = ["--batch-mode", "fixed", "--batch-ms", "20"]
ADAPTIVE = ["--batch-mode", "adaptive", "--batch-ms", "20"]
TARGETS: dict[str, tuple[str, list[str]]] = {
    "livecomments-paced": ("livecomments", []),  # the defaults: paced, at most 20 ms
    "livecomments-immediate": ("livecomments", ["--batch-ms", "0"]),
    "livecomments-batch20": ("livecomments", BATCH20),
    "livecomments-adaptive": ("livecomments", ADAPTIVE),
    # Viewer counts off (the default target has them on, every 2 s): the interval never comes.
    "livecomments-counts-off": ("livecomments", ["--viewers-interval", "1e9"]),
    "floor-immediate": ("floor", ["--tick-ms", "0"]),
    "floor-tick20": ("floor", ["--tick-ms", "20"]),
    "peer": ("peer", []),
}
# `bench hotvideo`: name -> (kind, processes, extra args). Several processes share one redis-server
# (the broker) and one SQLite file, as workers or as separate servers behind HAProxy (policy bounded).
# Connections (streams in their catch-up, posts) capped at HOT_CONNECTIONS, so streams get what else
# the open-files limit leaves (edge/admission.py keeps FD_HEADROOM spare and shares the rest).
HOT_CONNECTIONS = 256
HOT = ["--max-connections", str(HOT_CONNECTIONS)]
HOTVIDEO: dict[str, tuple[str, int, list[str]]] = {
    "one-process": ("livecomments", 1, HOT),  # the default batching
    "one-process-fixed20": ("livecomments", 1, [*HOT, "--batch-mode", "fixed", "--batch-ms", "20"]),
    # The bare uvloop fan-out with 20 ms ticks, and unbatched: what this machine allows one process,
    # so a run on a busier machine is read against its own floor.
    "floor": ("floor", 1, ["--tick-ms", "20"]),
    "floor-unbatched": ("floor", 1, ["--tick-ms", "0"]),
    "workers-2": ("workers", 2, HOT),
    "haproxy-2": ("haproxy", 2, HOT),
}


def pinned(core: int | None, argv: list[str]) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(core), *argv]  # taskset execs: the pid stays the server's


@dataclass
class Server:
    name: str
    port: int  # where the load generator connects (HAProxy's port when there is one)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)  # stopped in this order
    tmp: tempfile.TemporaryDirectory[str] | None = None
    children: list[int] = field(default_factory=list)  # workers a supervisor forked (it stops them)
    labels: dict[int, str] = field(default_factory=dict)  # pid -> what it is, for the CPU breakdown

    @property
    def pids(self) -> list[int]:
        """Every server-side process, whose CPU the load generator sums; RSS is the first one's."""
        return [*self.children, *(p.pid for p in self.procs)]

    def add(self, proc: subprocess.Popen[bytes], label: str, index: int | None = None) -> subprocess.Popen[bytes]:
        self.procs.insert(len(self.procs) if index is None else index, proc)
        self.labels[proc.pid] = label
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        if self.tmp is not None:
            self.tmp.cleanup()


def _spawn(argv: list[str], core: int | None, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        return subprocess.Popen(pinned(core, argv), stdout=subprocess.PIPE, stderr=err, preexec_fn=raise_nofile)


def _wait_listening(proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline, buf = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        buf += proc.stdout.read() or b""
        if re.search(rb"listening on http://", buf):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-1500:]}")
        time.sleep(0.02)
    raise TimeoutError(f"server did not start: {log.read_text()[-1500:]}")


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port}")


def _wait_ready(port: int, path: str, timeout: float = 20.0) -> None:
    """Until GET path answers 200 (HAProxy: once its health checks see the servers up)."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError as e:  # URLError and HTTPError (a 503 while no server is up) are OSErrors
            last = str(e)
        time.sleep(0.05)
    raise TimeoutError(f"{path} on {port} not ready: {last}")


def serve_argv(port: int, workdir: str, viewers: int, extra: list[str]) -> list[str]:
    """`livecomments serve --role both` as every livecomments target runs it."""
    return [
        sys.executable,
        "-m",
        "livecomments",
        "serve",
        "--role",
        "both",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage",
        f"sqlite:///{workdir}/lc.db",
        "--log-level",
        "warning",
        "--rate-limit-per-s",  # the load generator posts from one address
        "0",
        "--max-streams",  # the default (10,000) would turn viewers away above it
        str(max(10_000, viewers + 100)),
        *extra,
    ]


def start(name: str, core: int | None, viewers: int) -> Server:
    if name in HOTVIDEO:
        kind, processes, extra = HOTVIDEO[name]
    else:
        (kind, extra), processes = TARGETS[name], 1
    server = Server(name, free_port(), tmp=tempfile.TemporaryDirectory(prefix="fanout-"))
    assert server.tmp is not None
    log = Path(server.tmp.name) / "server.log"
    try:
        if kind == "livecomments":
            argv = serve_argv(server.port, server.tmp.name, viewers, extra)
        elif kind == "floor":
            argv = [sys.executable, "-m", "livecomments.benchmarks.fanout.floor", "--port", str(server.port), *extra]
        elif kind == "workers":
            _start_workers(server, core, viewers, processes, extra, log)
            return server
        elif kind == "haproxy":
            _start_behind_haproxy(server, core, viewers, processes, extra, log)
            return server
        else:
            if not PEER_PYTHON.exists():
                raise RuntimeError(f"peer stack not installed: {PEER_VENV} (run with --setup-peer)")
            redis_url = _start_redis(server, core)
            argv = [str(PEER_PYTHON), str(HERE / "peer.py"), "--port", str(server.port), "--redis", redis_url]
        proc = server.add(_spawn(argv, core, log), kind, 0)  # before the peer's redis: CPU counts both, RSS the first
        _wait_listening(proc, log)
        _wait_port(server.port)
        return server
    except BaseException:
        server.stop()
        raise


def _start_redis(server: Server, core: int | None) -> str:
    """A redis-server pinned like the server, stopped with it; its URL."""
    assert server.tmp is not None
    redis = RedisServer(Path(server.tmp.name)).start(wrap=lambda argv: pinned(core, argv), preexec_fn=raise_nofile)
    assert redis.proc is not None
    server.add(redis.proc, "redis-server")  # stopped with the server whatever happens next
    return redis.url


def _shared_storage(workdir: str) -> None:
    """One SQLite file for several processes: WAL before any of them opens it, so none races to switch."""
    with closing(sqlite3.connect(f"{workdir}/lc.db")) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _start_workers(server: Server, core: int | None, viewers: int, n: int, extra: list[str], log: Path) -> None:
    """`serve --workers n` on the server's port: a supervisor and the n workers it forks (pinned with it:
    children inherit the CPU affinity), sharing a redis broker."""
    assert server.tmp is not None
    _shared_storage(server.tmp.name)
    broker = _start_redis(server, core)
    share = math.ceil(viewers / n * 1.02)  # each worker's streams cap: SO_REUSEPORT's hash is not quite even
    argv = serve_argv(server.port, server.tmp.name, share, ["--workers", str(n), "--broker", broker, *extra])
    supervisor = server.add(_spawn(argv, core, log), "supervisor", 0)  # stopped first: it stops its workers
    _wait_listening(supervisor, log)  # printed once every worker listens
    children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text().split()
    server.children = [int(pid) for pid in children]
    for pid in server.children:  # lc-worker-N (workers.py names them)
        server.labels[pid] = Path(f"/proc/{pid}/comm").read_text().strip().replace("lc-worker-", "w")
    if len(server.children) != n:
        raise RuntimeError(f"supervisor {supervisor.pid} has {len(server.children)} children, expected {n}")
    _wait_port(server.port)


def _start_behind_haproxy(
    server: Server, core: int | None, viewers: int, n: int, extra: list[str], log: Path
) -> None:
    """n `both` processes (rt1…) sharing a redis broker and one SQLite file, behind HAProxy on the
    server's port (lbconfig, policy bounded): streams hashed on the video with bounded loads, posts
    round-robin over the same processes. HAProxy and redis are pinned with them."""
    assert server.tmp is not None
    binary = shutil.which("haproxy", path=SBIN_PATH)
    if binary is None:
        raise RuntimeError("haproxy is not installed")
    _shared_storage(server.tmp.name)
    broker = _start_redis(server, core)
    ports = [free_port() for _ in range(n)]
    for i, port in enumerate(ports, 1):
        argv = serve_argv(port, server.tmp.name, viewers, ["--broker", broker, "--server-id", f"rt{i}", *extra])
        server.add(_spawn(argv, core, log), f"rt{i}", i - 1)
    for proc in server.procs[:n]:
        _wait_listening(proc, log)
    addresses = [f"127.0.0.1:{port}" for port in ports]
    balancer = Balancer(f"127.0.0.1:{server.port}", addresses, addresses, "bounded", server.tmp.name)
    conf = Path(server.tmp.name) / "haproxy.cfg"
    conf.write_text(haproxy_config(balancer))
    server.add(_spawn([binary, "-db", "-f", str(conf)], core, log), "haproxy", n)  # -db: in the foreground
    _wait_ready(server.port, "/readyz")


def setup_peer() -> None:
    """Create the peer's venv (PEER_VENV) with its pinned stack (kept out of the project venv)."""
    if not PEER_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run(
        [
            str(PEER_PYTHON),
            "-m",
            "pip",
            "install",
            "-q",
            "-r",
            str(HERE / "requirements-peer.txt"),
        ],
        check=True,
    )
