"""A private redis-server on a free port: the one way `cluster`, the benchmarks and the tests start it.

Each caller owns the process differently (a cluster member in its own session that dies with the
launcher, a benchmark child pinned to a core, a test fixture killed mid-stream and restarted on the
same port), so the caller passes its Popen options; what is shared is the command line (no
persistence, loopback only) and the readiness check: a PING answered with PONG, not merely an open
port (redis accepts connections while it is still loading).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
RESTART_DELAY = 1.0  # seconds before a dead process is started again; doubled for each quick crash in a row
CRASH_LIMIT = 5  # deaths in a row, each within CRASH_WINDOW of its start, before a supervisor gives up
CRASH_WINDOW = 10.0
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])  # nginx, redis may live in sbin


class RedisUnavailable(RuntimeError):
    """redis-server is not installed, exited, or did not answer; the message is for the user."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    path = shutil.which("redis-server", path=SBIN_PATH)
    if path is None:
        raise RedisUnavailable("redis-server is not installed: sudo apt-get install redis-server")
    return path


@dataclass
class Restarts:
    """When a supervised process that died is started again (`serve --workers`, `cluster`).

    After RESTART_DELAY, doubled for each death in a row within CRASH_WINDOW of its start (a process
    that cannot start is not restarted in a tight loop); the CRASH_LIMIT-th such death gives up."""

    started: float = 0.0
    crashes: int = 0

    def start(self) -> None:
        self.started = time.monotonic()

    def died(self) -> float | None:
        """Seconds to wait before starting it again, or None: it keeps dying at start, give up."""
        quick = time.monotonic() - self.started < CRASH_WINDOW
        self.crashes = self.crashes + 1 if quick else 1
        if self.crashes >= CRASH_LIMIT:
            return None
        return RESTART_DELAY * 2.0 ** (self.crashes - 1)


class RedisServer:
    """redis-server on 127.0.0.1:`port` (a free one by default); stop() then start() keeps the port."""

    def __init__(self, workdir: Path, port: int = 0, extra: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), *self.extra]

    def start(self, timeout: float = 10.0, wrap: Callable[[list[str]], list[str]] = list,
              **popen: Any) -> RedisServer:
        """Spawn (`wrap` may prefix the command, e.g. taskset) and return once it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stream in ("stdin", "stdout", "stderr"):
            popen.setdefault(stream, subprocess.DEVNULL)
        self.proc = subprocess.Popen(wrap(self.argv()), **popen)
        try:
            wait_for_redis(self.port, self.proc, timeout)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)


def wait_for_redis(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Poll with PING until PONG: another process offers no event to wait on."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RedisUnavailable(f"redis-server exited with {proc.returncode} before answering on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RedisUnavailable(f"redis-server did not answer PING on port {port} within {timeout:g} s")
        time.sleep(0.02)


def die_with_parent() -> Callable[[], None] | None:
    """What a child runs after fork (before exec, if any) so the kernel sends it SIGTERM when we die.

    Linux only. The kernel ties the signal to the forking *thread*, not the process, so it is
    set only from the main thread: a Cluster started from another thread (asyncio.to_thread)
    would otherwise lose its children when that thread ends; those rely on stop() and atexit.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def set_parent_death_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # we died between fork and prctl: nobody will send it now
            os.kill(os.getpid(), signal.SIGTERM)

    return set_parent_death_signal
