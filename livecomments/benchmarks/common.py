"""What every benchmark needs: processes on free ports, /metrics, CPU from /proc, percentiles,
and where reports go."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from livecomments.ops.procs import RedisServer, free_port

__all__ = ["Process", "bench_home", "checkout", "cpu_seconds", "free_port", "out_dir", "parse_metrics", "percentiles",
           "raise_nofile", "rss_bytes"]
NOFILE = 20_000
TICKS = os.sysconf("SC_CLK_TCK")


def raise_nofile(wanted: int = NOFILE) -> int:
    """Viewers are sockets. Children inherit the limit, so servers spawned after this have it too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def out_dir(quick: bool, out: Path | None = None) -> Path:
    """Where a report goes unless --out says: a full run updates the committed benchmarks/results/
    of the checkout the package runs from; a quick run's figures are not comparable, so they go to a
    git-ignored scratch folder beside it. An installed copy (no checkout) writes both into
    ./livecomments-bench/ of the current directory."""
    if out is not None:
        return out
    return bench_home() / ("scratch" if quick else "results")


PACKAGE = Path(__file__).resolve().parents[1]  # the livecomments/ this code was imported from


def checkout(package: Path = PACKAGE) -> Path | None:
    """The checkout `package` (this livecomments/) sits in: its parent holds pyproject.toml and
    benchmarks/results/ (a clone, or an editable install of one); None for an installed copy.
    Found from where the code is, not from the current directory, so a run from anywhere updates
    the reports of the code that ran."""
    root = package.parent
    return root if (root / "pyproject.toml").is_file() and (root / "benchmarks" / "results").is_dir() else None


def bench_home() -> Path:
    """benchmarks/ of the checkout the package runs from, else ./livecomments-bench."""
    root = checkout()
    return root / "benchmarks" if root is not None else Path("livecomments-bench")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat); 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces; fields start at 3
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? ([-+0-9.eEinfaINF]+)$", re.M)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {name: value}; labelled series of one name are summed."""
    out: dict[str, float] = {}
    for name, value in _SAMPLE.findall(text):
        out[name] = out.get(name, 0.0) + float(value)
    return out


def percentiles(samples: Sequence[float] | np.ndarray, qs: Sequence[float] = (50, 99)) -> list[float]:
    if len(samples) == 0:
        return [float("nan")] * (len(qs) + 1)
    arr = np.asarray(samples, dtype=np.float64)
    return [float(x) for x in np.percentile(arr, qs)] + [float(arr.max())]


class Process:
    """A child process stopped on exit; `serve()` waits for livecomments' 'listening on' line."""

    def __init__(self, argv: list[str], log: Path, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.argv = argv
        self.log_path = log
        self.url = ""
        self._log = open(log, "ab")
        self.proc = proc or subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def serve(cls, args: list[str], log: Path) -> Process:
        """Spawn `livecomments serve`; call listening() before using .url (spawn many, then wait)."""
        # A benchmark posts as fast as it can from one address: rate limits off.
        self = cls([sys.executable, "-m", "livecomments", "serve", "--rate-limit-per-s", "0", *args], log)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        return self

    def listening(self, timeout: float = 20.0) -> Process:
        assert self.proc.stdout is not None
        deadline, buf = time.monotonic() + timeout, b""
        while time.monotonic() < deadline:
            buf += self.proc.stdout.read() or b""
            match = re.search(rb"listening on (http://\S+)", buf)
            if match:
                self.url = match.group(1).decode()
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{' '.join(self.argv[3:8])}… did not start: {tail[0][:300]}")

    @classmethod
    def redis(cls, workdir: Path) -> Process:
        """A private redis-server (livecomments.ops.procs), its output in workdir/redis.log."""
        server = RedisServer(workdir, extra=("--maxclients", "10000"))
        log = workdir / "redis.log"
        with open(log, "ab") as out:
            server.start(stdout=out, stderr=out)
        self = cls(server.argv(), log, server.proc)
        self.url = server.url
        return self

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
