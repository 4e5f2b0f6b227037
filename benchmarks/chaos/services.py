"""The processes a chaos run breaks: livecomments on fixed ports (a restart comes back where
clients and the registry expect it), and the real redis-server, etcd and PostgreSQL under them.

The service starters are the test suite's own (tests/fixtures), so a fault here is the same
process the tests start (PostgreSQL's halt and resume included); this module adds what faults
need: kill -9 and start again on the same port, SIGSTOP/SIGCONT of a process tree, and peak
RSS of the livecomments processes.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from benchmarks.common import rss_bytes
from tests.fixtures.processes import LivecommentsProcess


def process_tree(root: int) -> list[int]:
    """root and every descendant, from /proc (a frozen service must not keep children running)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def signal_tree(root: int, sig: signal.Signals) -> None:
    for pid in process_tree(root):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Node:
    """One livecomments process on a fixed port: kill() is kill -9, start() brings it back there."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.process = LivecommentsProcess(args, workdir / f"{name}.log")

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def pid(self) -> int | None:
        proc = self.process.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> Node:
        self.process.start(timeout=30)
        return self

    def kill(self) -> None:
        self.process.stop(signal.SIGKILL)


class PeakRss:
    """Samples the RSS of each node every `interval` s in a thread (processes restart: by name)."""

    def __init__(self, nodes: list[Node], interval: float = 0.2) -> None:
        self.nodes, self.interval = nodes, interval
        self.peak: dict[str, int] = {node.name: 0 for node in nodes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for node in self.nodes:
                pid = node.pid
                if pid is not None:
                    self.peak[node.name] = max(self.peak[node.name], rss_bytes(pid))

