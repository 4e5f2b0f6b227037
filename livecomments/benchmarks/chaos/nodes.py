"""The processes a chaos run breaks: livecomments on fixed ports (a restart comes back where
clients and the registry expect it), and the real redis-server, etcd and PostgreSQL under them
(livecomments.ops: the same starters the tests use, PostgreSQL's halt and resume included).
This module adds what faults need: kill -9 and start again on the same port, SIGSTOP/SIGCONT of
a process tree, and peak RSS of the livecomments processes.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from livecomments.benchmarks.common import Process, rss_bytes


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
    """SIGSTOP goes root first, SIGCONT leaves first: no process ever runs while a child it
    watches is still stopped (a watching parent such as runuser takes that for a job-control
    stop and stops itself for good)."""
    tree = process_tree(root)
    for pid in reversed(tree) if sig == signal.SIGCONT else tree:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Node:
    """One livecomments process on a fixed port: kill() is kill -9, start() brings it back there."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.args = args
        self.log = workdir / f"{name}.log"
        self.url = f"http://127.0.0.1:{args[args.index('--port') + 1]}"
        self.process: Process | None = None

    @property
    def pid(self) -> int | None:
        process = self.process  # read once: the RSS sampler's thread calls this while kill() runs
        return process.proc.pid if process is not None and process.proc.poll() is None else None

    def start(self, timeout: float = 30.0) -> Node:
        """Raises RuntimeError (the log's last line) when it exits or does not listen in time."""
        self.process = Process.serve(self.args, self.log).listening(timeout)
        return self

    def kill(self) -> None:
        if self.process is not None:
            if self.process.proc.poll() is None:
                self.process.proc.kill()
            self.process.stop(5)
            self.process = None


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

