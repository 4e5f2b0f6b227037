"""Private PostgreSQL and etcd servers on free ports: the one way the fault suite
(`livecomments bench chaos`) and the tests start them (redis-server is `procs.RedisServer`).

Both are the distribution's binaries (Debian's postgresql and etcd-server) run as our own
children, so the caller can signal, freeze and wait on the very process that serves, with every
wait bounded: a fault that is held too long is an error, never a hang.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from livecomments.ops.procs import free_port

__all__ = ["EtcdServer", "PostgresServer", "ServiceUnavailable", "wait_port"]


class ServiceUnavailable(RuntimeError):
    """A server is not installed, exited, or did not become ready; the message is for the user."""


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until something accepts on 127.0.0.1:`port` (polled: another process offers no event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceUnavailable(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port} after {timeout:g} s")


def stop_child(proc: subprocess.Popen[bytes] | None, sigs: tuple[signal.Signals, ...], timeout: float) -> None:
    """Send each signal in turn, waiting up to `timeout` s after each, then SIGKILL (bounded)."""
    if proc is None or proc.poll() is not None:
        return
    for sig in sigs:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait(timeout)


def pg_binary(name: str) -> str:
    """Debian keeps PostgreSQL's server binaries off PATH, per major version; the newest wins."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major_version) or [
        p for p in [shutil.which(name)] if p]
    if not found:
        raise ServiceUnavailable(f"PostgreSQL's {name} is not installed: sudo apt-get install postgresql")
    return found[-1]


def _major_version(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


class PostgresServer:
    """postgres on 127.0.0.1:`port` (a free one) with its data in a temp dir; halt() then resume()
    keeps port and data.

    PostgreSQL refuses to run as root, so as root the children drop to the `postgres` user in the
    fork itself (Popen user=), not through runuser: runuser is a watching parent that stops itself
    when it sees its child stopped and is not woken by a later SIGCONT to the child, so after one
    SIGSTOP/SIGCONT of the tree it never reaped postgres again and halt() waited on it forever.
    `proc` is the postmaster itself: signals reach it and wait() is its exit.
    """

    def __init__(self, workdir: Path | None = None, port: int = 0) -> None:
        """workdir (default: a temp dir of its own, removed by stop()) must be reachable by the
        postgres user when we are root: not under a directory only root may enter."""
        self.port = port or free_port()
        self.dir = str(workdir) if workdir is not None else tempfile.mkdtemp(prefix="lc-pg-")
        self.proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count()
        self._owned_dir = workdir is None
        self._as: dict[str, Any] = {}
        self.user = os.environ.get("USER", "postgres")
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceUnavailable("running as root needs the postgres user (apt-get install postgresql)") from None
            self._as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            self.user = "postgres"

    @property
    def data(self) -> str:
        return os.path.join(self.dir, "data")

    @property
    def url(self) -> str:
        """The server, without a database: append /NAME (or use database())."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> PostgresServer:
        os.makedirs(self.dir, exist_ok=True)
        if self._as:
            os.chown(self.dir, self._as["user"], self._as["group"])
        done = subprocess.run(
            [pg_binary("initdb"), "-D", self.data, "-U", self.user, "--auth=trust", "-E", "UTF8"],
            capture_output=True, timeout=timeout, cwd=self.dir, **self._as)
        if done.returncode != 0:
            raise ServiceUnavailable(f"initdb failed: {done.stderr.decode(errors='replace')[-500:]}")
        return self.resume(timeout)

    def resume(self, timeout: float = 30.0) -> PostgresServer:
        """Run the server on its port and data directory (again, after `halt`); returns once the
        postmaster says it accepts connections."""
        self.proc = subprocess.Popen(
            [pg_binary("postgres"), "-D", self.data, "-p", str(self.port), "-k", self.dir,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir, **self._as,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            stop_child(self.proc, (signal.SIGQUIT,), 5)
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """What `pg_ctl start -w` waits for: the status line of postmaster.pid (line 8) says ready."""
        pidfile, deadline = Path(self.data) / "postmaster.pid", time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceUnavailable(f"postgres exited with {self.proc.returncode} before it was ready")
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[0].strip() == str(self.proc.pid) and lines[7].strip() == "ready":
                wait_port(self.port, max(0.5, deadline - time.monotonic()), self.proc)
                return
            time.sleep(0.02)
        raise TimeoutError(f"postgres on {self.port} not ready after {timeout:g} s")

    def halt(self, timeout: float = 30.0) -> None:
        """Stop the server as an outage would (open connections cut), keeping port and data for
        `resume`: SIGINT to the postmaster is a fast shutdown (`pg_ctl stop -m fast`), and we wait
        for the postmaster's own exit; a server still up after `timeout` s gets an immediate
        shutdown (SIGQUIT), then SIGKILL."""
        stop_child(self.proc, (signal.SIGINT, signal.SIGQUIT), timeout)

    def database(self, timeout: float = 30.0) -> str:
        """A fresh, empty database; its URL."""
        name = f"t{next(self._ids)}"
        deadline = time.monotonic() + timeout
        while True:  # a server resumed a moment ago may still refuse ("starting up")
            done = subprocess.run([pg_binary("psql"), f"{self.url}/postgres", "-c", f"CREATE DATABASE {name}"],
                                  capture_output=True, timeout=timeout)
            if done.returncode == 0:
                return f"{self.url}/{name}"
            if time.monotonic() > deadline:
                raise ServiceUnavailable(done.stderr.decode(errors="replace"))
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGTERM would wait for every client to leave), bounded; then the data goes."""
        stop_child(self.proc, (signal.SIGINT, signal.SIGQUIT), timeout)
        if self._owned_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class EtcdServer:
    """A one-member etcd (v3 API) on free ports with its data in `workdir`; stop() kills it
    (SIGKILL, an outage) and start() brings it back on the same ports and data."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.peer_port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> EtcdServer:
        binary = shutil.which("etcd")
        if binary is None:
            raise ServiceUnavailable("etcd is not installed: sudo apt-get install etcd-server")
        client, peer = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.peer_port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "etcd.log", "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [binary, "--name", "lc", "--data-dir", str(self.workdir / "data"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"lc={peer}", "--log-level", "error"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )
        try:
            deadline = time.monotonic() + timeout
            wait_port(self.port, timeout, self.proc)
            self._wait_leader(client, max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_leader(self, client: str, timeout: float) -> None:
        """Listening is not serving: requests block until the member has elected itself."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(client + "/health", timeout=1.0) as r:
                    if json.load(r).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"etcd on {self.port} not healthy after {timeout:g} s")

    def stop(self, timeout: float = 5.0) -> None:
        stop_child(self.proc, (), timeout)
