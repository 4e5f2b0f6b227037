"""One process of `livecomments cluster`: started, checked, restarted when it dies, stopped.

A member's command line is readable by every local user (ps, /proc/PID/cmdline), its environment
only by its own user: secrets (the dispatcher's cluster secret, a URL's password) go to a member
through `env`, never `args`, and a --serve-arg carrying one is refused.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from livecomments.config import ENV_PREFIX, mask_url
from livecomments.ops.procs import CRASH_WINDOW, Restarts, die_with_parent

log = logging.getLogger(__name__)
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy


class ClusterError(RuntimeError):
    """The cluster cannot start or go on; the message is for the user."""


@dataclass
class Member:
    """One process of the cluster, in a process group of its own."""

    name: str  # redis, w1…, rt1…, nginx or haproxy
    url: str
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)  # added to ours: the secrets, kept off args
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    restarts: Restarts = field(default_factory=Restarts, repr=False)
    restart_at: float = 0.0  # when a dead member is started again; 0: it is not waiting

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    @property
    def address(self) -> str:
        return self.url.split("://", 1)[1].split("/", 1)[0]

    def start(self) -> None:
        with open(self.log, "ab") as log_file:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                         env={**os.environ, **self.env} if self.env else None,
                                         start_new_session=True, preexec_fn=die_with_parent())
        self.restarts.start()
        self.restart_at = 0.0

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ClusterError(f"{self.name} exited with {self.proc.returncode}; {self._last_words()}")

    def tend(self) -> float | None:
        """Reap this member if it died and start it again when its delay is over (same port, same
        flags); ClusterError when it keeps dying at start. Returns the seconds until its restart."""
        if self.proc is not None and self.restart_at == 0.0 and self.proc.poll() is not None:  # reaped
            self.signal_group(signal.SIGKILL)  # what it leaves (nginx's workers) would hold its port
            delay = self.restarts.died()
            if delay is None:
                raise ClusterError(f"{self.name} exited with {self.proc.returncode} {self.restarts.crashes} times "
                                   f"in a row within {CRASH_WINDOW:g} s of starting; {self._last_words()}")
            log.warning("%s (pid %d) exited with %s; starting it again in %g s",
                        self.name, self.pid, self.proc.returncode, delay)
            self.restart_at = time.monotonic() + delay
        if self.restart_at == 0.0:
            return None
        if time.monotonic() >= self.restart_at:
            self.start()
            log.warning("%s started again: pid %d", self.name, self.pid)
            return None
        return self.restart_at - time.monotonic()

    def _last_words(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines() if self.log.exists() else []
        return f"see {self.log}" + (f": {lines[-1].strip()[:300]}" if lines else "")

    def signal_group(self, sig: int) -> None:
        if self.pid == 0:
            return
        try:
            os.killpg(self.pid, sig)  # start_new_session: the group id is the leader's pid
        except ProcessLookupError:
            pass


def secret_in(args: Sequence[str]) -> str | None:
    """The environment variable to use instead, if these flags carry a secret (`--x-secret V`,
    `--x-secret=V`, a URL with a password); None if they carry none."""
    def option(flag: str) -> str:
        return flag.removeprefix("--").replace("-", "_")

    for i, arg in enumerate(args):
        flag, _, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if option(flag).endswith("_secret") or "password" in option(flag):
            return ENV_PREFIX + option(flag).upper()
        if value and mask_url(value) != value:
            return ENV_PREFIX + option(flag or (args[i - 1] if i else "")).upper()
    return None


def check_port_free(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise ClusterError(f"port {port} is taken ({e.strerror}): choose another --base-port, or none") from None


def wait_http(member: Member, paths: Sequence[str], deadline: float) -> None:
    """Poll until every path answers 200: there is no event to wait for in another process."""
    pending = list(paths)
    while pending:
        member.check_alive()
        try:
            with _LOCAL.open(member.url + pending[0], timeout=1.0) as resp:
                if resp.status == 200:
                    pending.pop(0)
                    continue
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise ClusterError(f"{member.name} did not answer {pending[0]} in time; see {member.log}")
        time.sleep(0.05)
