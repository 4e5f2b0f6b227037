"""The servers under test, each started on a free port pinned to the server core."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from livecomments.benchmarks.common import bench_home, free_port, raise_nofile
from livecomments.procs import RedisServer

HERE = Path(__file__).resolve().parent  # peer.py and its pinned requirements ship with the package
PEER_VENV = bench_home() / ".venv-peer"  # its own venv: the peer's dependencies stay out of ours
PEER_PYTHON = PEER_VENV / "bin" / "python"

# name -> (kind, extra args). livecomments' batch modes are its `batch_ms` option.
TARGETS: dict[str, tuple[str, list[str]]] = {
    "livecomments-immediate": ("livecomments", ["--batch-ms", "0"]),
    "livecomments-batch20": ("livecomments", ["--batch-ms", "20", "--no-batch-adaptive"]),
    "livecomments-adaptive": ("livecomments", ["--batch-ms", "20", "--batch-adaptive"]),
    # Viewer counts off (the default adaptive target has them on, every 2 s): the interval never comes.
    "livecomments-counts-off": ("livecomments", ["--batch-ms", "20", "--batch-adaptive", "--viewers-interval", "1e9"]),
    "floor-immediate": ("floor", ["--tick-ms", "0"]),
    "floor-tick20": ("floor", ["--tick-ms", "20"]),
    "peer": ("peer", []),
}


def pinned(core: int | None, argv: list[str]) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(core), *argv]  # taskset execs: the pid stays the server's


@dataclass
class Server:
    name: str
    port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

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


def start(name: str, core: int | None, viewers: int) -> Server:
    kind, extra = TARGETS[name]
    server = Server(name, free_port(), tmp=tempfile.TemporaryDirectory(prefix="fanout-"))
    assert server.tmp is not None
    log = Path(server.tmp.name) / "server.log"
    try:
        if kind == "livecomments":
            argv = [
                sys.executable,
                "-m",
                "livecomments",
                "serve",
                "--role",
                "both",
                "--port",
                str(server.port),
                "--storage",
                f"sqlite:///{server.tmp.name}/lc.db",
                "--log-level",
                "warning",
                "--rate-limit-per-s",  # the load generator posts from one address
                "0",
                "--max-streams",  # the default (10,000) would turn viewers away above it
                str(max(10_000, viewers + 100)),
                *extra,
            ]
        elif kind == "floor":
            argv = [sys.executable, "-m", "livecomments.benchmarks.fanout.floor", "--port", str(server.port), *extra]
        else:
            if not PEER_PYTHON.exists():
                raise RuntimeError(f"peer stack not installed: {PEER_VENV} (run with --setup-peer)")
            redis = RedisServer(Path(server.tmp.name)).start(
                wrap=lambda argv: pinned(core, argv), preexec_fn=raise_nofile
            )
            assert redis.proc is not None
            server.procs.append(redis.proc)  # stopped with the server whatever happens next
            argv = [str(PEER_PYTHON), str(HERE / "peer.py"), "--port", str(server.port), "--redis", redis.url]
            main = _spawn(argv, core, log)
            server.procs.insert(0, main)  # CPU counts both; RSS only the first
            _wait_listening(main, log)
            _wait_port(server.port)
            return server
        proc = _spawn(argv, core, log)
        server.procs.append(proc)
        _wait_listening(proc, log)
        _wait_port(server.port)
        return server
    except BaseException:
        server.stop()
        raise


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
