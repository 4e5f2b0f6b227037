"""`serve --workers N`: N processes on one port, each with its own hub, under one supervisor.

One process fans out on one core. Workers are the way to use the other cores of a machine without a
balancer in front: the supervisor opens N listening sockets on the same port with SO_REUSEPORT and
forks one worker per socket; the kernel spreads incoming connections over the sockets by a hash of
the address pair, so a hot video's viewers land on every worker and each worker writes to its share
only. Comments reach every worker through the broker (or the dispatcher's registry) they share,
exactly as they reach separate servers: workers are separate processes, so the in-memory broker is
refused (config.py). benchmarks/results/hotvideo.md measures workers against separate servers
behind HAProxy.

The supervisor keeps every listening socket open for the whole run: when a worker dies, the
connections the kernel hashes to its socket wait in that socket's backlog until the replacement
(forked about a second later on the same socket) accepts them, instead of being refused.
It prints one "listening on" line once every worker listens, restarts a worker that dies, stops
them all on SIGTERM/SIGINT, and exits with the first worker's error when they cannot start.
Workers get SIGTERM if the supervisor dies without stopping them (a parent-death signal).

A worker that hangs is not dead, and its socket would keep taking its share of new connections
and never answer them. So each worker's event loop says "alive" on the report pipe every
HEARTBEAT_INTERVAL, and the supervisor kills (SIGKILL) one it has not heard from for
HUNG_TIMEOUT, logging one line, and starts it again as it does a worker that died. The beat comes
from the loop itself, so it stops with whatever stops the loop: SIGSTOP, a blocking call, a
deadlock, a machine swapping. 5 s: five missed beats, far beyond any stall of a working loop
(storage runs on threads; a busy fan-out yields every batch) even on a loaded machine, and short
enough that the connections queued meanwhile on its socket are answered by the replacement
(restarted a second later) within a common 10 s client timeout.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing.connection
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from livecomments.config import Config
from livecomments.edge.app import StartError, bind, run
from livecomments.edge.keys import METRICS, METRICS_GATHER
from livecomments.logs import setup_logging
from livecomments.metrics import merge_labeled
from livecomments.ops.procs import CRASH_WINDOW, Restarts, die_with_parent

log = logging.getLogger(__name__)
_fork = multiprocessing.get_context("fork")  # before any event loop or thread exists: safe
START_TIMEOUT = 60.0
HEARTBEAT_INTERVAL = 1.0  # a worker's loop writes "alive N" this often
HUNG_TIMEOUT = 5.0  # a worker not heard from this long is killed and started again (see the docstring)


@dataclass
class _Worker:
    index: int
    sock: socket.socket
    process: BaseProcess | None = None
    restarts: Restarts = field(default_factory=Restarts)
    heard: float = 0.0  # when it last wrote a report (ready, alive), or was started
    answer_by: float = 0.0  # killed as hung if nothing is heard from it by then
    killed_hung: float | None = None  # seconds it had been silent when the supervisor killed it

    def heard_from(self, now: float) -> None:
        self.heard, self.answer_by = now, now + HUNG_TIMEOUT


class _Hosted:
    """A worker as app.serve sees it (app.Worker): its socket, its metrics, its readiness report.

    Each worker also serves its own /metrics on an abstract Unix socket named after the supervisor's
    pid (Linux: no file to clean up when the supervisor is killed), so /metrics on the shared port,
    whichever worker the kernel hands it to, answers for all of them with a `worker` label on every
    series (a worker being restarted is left out of that scrape)."""

    def __init__(self, sock: socket.socket, index: int, count: int, report: Callable[[str], None]) -> None:
        self.sock, self.index, self.count, self.report = sock, index, count, report
        self.supervisor = os.getppid()

    def listening(self, line: str) -> None:
        self.report(f"ready {self.index}")
        self._beat()

    def _beat(self) -> None:
        """Runs on the event loop every HEARTBEAT_INTERVAL: when the loop stops, so does the beat."""
        self.report(f"alive {self.index}")
        asyncio.get_running_loop().call_later(HEARTBEAT_INTERVAL, self._beat)

    def setup(self, app: web.Application) -> None:
        app[METRICS_GATHER] = lambda: self._gather(app)
        app.cleanup_ctx.append(self._metrics_site)

    def _socket(self, index: int) -> str:
        return f"\0livecomments-{self.supervisor}-w{index}"

    async def _metrics_site(self, app: web.Application) -> AsyncIterator[None]:
        async def own(request: web.Request) -> web.Response:
            return web.Response(body=app[METRICS].render())

        local = web.Application()
        local.router.add_get("/metrics", own)
        runner = web.AppRunner(local, access_log=None)
        await runner.setup()
        await web.UnixSite(runner, self._socket(self.index)).start()
        yield
        await runner.cleanup()

    async def _gather(self, app: web.Application) -> bytes:
        async def fetch(index: int) -> bytes | None:
            # By hand: aiohttp's client on uvloop cannot connect to an abstract socket name.
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(self._socket(index))  # local: accepted or refused at once
                sock.setblocking(False)
                async with asyncio.timeout(2):
                    reader, writer = await asyncio.open_unix_connection(sock=sock)
                    writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
                    response = await reader.read()
                    writer.close()
            except (OSError, TimeoutError):
                sock.close()
                return None  # being restarted
            head, _, body = response.partition(b"\r\n\r\n")
            return body if head.split(b" ", 2)[1:2] == [b"200"] else None

        others = [i for i in range(1, self.count + 1) if i != self.index]
        texts = {str(self.index): app[METRICS].render()}
        for index, text in zip(others, await asyncio.gather(*map(fetch, others)), strict=True):
            if text is not None:
                texts[str(index)] = text
        return merge_labeled("worker", texts)


class _Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        first = bind(config.host, config.port, reuse_port=True)  # port 0: the kernel picks, the others follow
        self.port = int(first.getsockname()[1])
        socks = [first] + [bind(config.host, self.port, reuse_port=True) for _ in range(config.workers - 1)]
        self.workers = [_Worker(i + 1, sock) for i, sock in enumerate(socks)]
        self.reports, self._report_w = os.pipe()  # workers write "ready N" / "alive N" / "error N message" lines
        os.set_blocking(self._report_w, False)  # a supervisor that stops reading must not stop its workers
        self.stopping = False
        self._buf = b""

    def start(self, worker: _Worker) -> None:
        worker.process = _fork.Process(target=self._worker_main, args=(worker, die_with_parent()),
                                       name=f"livecomments-w{worker.index}")
        worker.process.start()
        worker.restarts.start()
        worker.heard, worker.answer_by, worker.killed_hung = time.monotonic(), time.monotonic() + START_TIMEOUT, None

    def _worker_main(self, worker: _Worker, set_death_signal: Callable[[], None] | None) -> None:
        """In the forked child: serve on this worker's socket until SIGTERM."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if set_death_signal is not None:
            set_death_signal()
        for other in self.workers:
            if other is not worker:
                other.sock.close()
        os.close(self.reports)
        _name_process(f"lc-worker-{worker.index}")
        _tag_log_records(worker.index)
        host = self.config.host
        config = self.config.replace(server_id=f"{self.config.server_id or f'{host}:{self.port}'}/w{worker.index}")
        try:
            run(config, _Hosted(worker.sock, worker.index, len(self.workers), self._report))
        except (StartError, OSError) as e:
            self._report(f"error {worker.index} {' '.join(str(e).split())}")
            os._exit(1)

    def _report(self, line: str) -> None:
        try:
            os.write(self._report_w, (line + "\n").encode()[:4096])  # one write under PIPE_BUF: never interleaved
        except BlockingIOError:  # the pipe is full: the supervisor is not reading, and would not act on it
            pass

    def read_reports(self) -> list[tuple[str, int, str]]:
        """(kind, worker index, message) of each whole line; each line marks its worker as heard from."""
        self._buf += os.read(self.reports, 65536)
        *lines, self._buf = self._buf.split(b"\n")
        reports, now = [], time.monotonic()
        for line in lines:
            kind, _, rest = line.decode(errors="replace").partition(" ")
            index, _, message = rest.partition(" ")
            if index.isdigit() and 1 <= int(index) <= len(self.workers):
                self.workers[int(index) - 1].heard_from(now)
                reports.append((kind, int(index), message))
        return reports

    def wait_ready(self) -> None:
        waiting = {w.index for w in self.workers}
        deadline = time.monotonic() + START_TIMEOUT
        while waiting and not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StartError(f"workers {sorted(waiting)} did not start within {START_TIMEOUT:g} s")
            sentinels = {w.process.sentinel: w for w in self.workers if w.process is not None}
            for ready in _wait([self.reports, *sentinels], left):
                if ready == self.reports:
                    for kind, index, message in self.read_reports():
                        if kind == "error":
                            raise StartError(message or f"worker {index} failed to start")
                        if kind == "ready":
                            waiting.discard(index)
                elif sentinels[ready].index in waiting and not self.read_pending():  # died without a word
                    w = sentinels[ready]
                    assert w.process is not None
                    raise StartError(f"worker {w.index} exited with {w.process.exitcode} before listening")

    def read_pending(self) -> bool:
        """Whether a report is waiting in the pipe (a worker's last words arrive before its sentinel)."""
        return bool(_wait([self.reports], 0))

    def watch(self) -> None:
        """Until SIGTERM/SIGINT: restart each worker that dies, kill one that hangs (it is then
        restarted as one that died); give up on one that keeps dying at start."""
        restart_at: dict[int, float] = {}
        while not self.stopping:
            sentinels = {w.process.sentinel: w for w in self.workers if w.process is not None}
            for ready in _wait([self.reports, *sentinels], 0.5):
                if ready == self.reports:
                    for kind, index, message in self.read_reports():
                        if kind == "error":
                            log.warning("worker %d %s", index, message)
                    continue
                w = sentinels[ready]
                assert w.process is not None
                if self.stopping:
                    break
                delay = w.restarts.died()
                how = (f"exited with {w.process.exitcode}" if w.killed_hung is None else
                       f"did not answer for {w.killed_hung:.1f} s: killed it")
                if delay is None:
                    raise StartError(f"worker {w.index} died {w.restarts.crashes} times in a row within "
                                     f"{CRASH_WINDOW:g} s of starting ({how}); stopping")
                log.warning("worker %d (pid %d) %s; starting it again in %g s", w.index, w.process.pid, how, delay)
                w.process.join(0)  # reaped now, not left a zombie until the next start
                w.process = None
                restart_at[w.index] = time.monotonic() + delay
            if not self.stopping:
                self.kill_hung()
            for w in self.workers:
                if w.index in restart_at and time.monotonic() >= restart_at[w.index] and not self.stopping:
                    del restart_at[w.index]
                    self.start(w)

    def kill_hung(self) -> None:
        """SIGKILL each worker not heard from in time; its death is then handled as any other."""
        now = time.monotonic()
        for w in self.workers:
            if w.process is None or w.process.pid is None or w.killed_hung is not None or now < w.answer_by:
                continue
            w.killed_hung = now - w.heard
            try:
                os.kill(w.process.pid, signal.SIGKILL)
            except ProcessLookupError:  # it died on its own meanwhile
                pass

    def stop(self) -> None:
        alive = [w.process for w in self.workers if w.process is not None and w.process.is_alive()]
        for process in alive:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_timeout + 5
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        for w in self.workers:
            w.sock.close()


def _wait(fds: list[int], timeout: float) -> list[int]:
    """The descriptors (report pipe, process sentinels) that are readable within timeout."""
    return [cast(int, fd) for fd in multiprocessing.connection.wait(fds, timeout)]


def _name_process(name: str) -> None:
    """The name ps and top show (Linux; at most 15 characters), so an operator sees which worker is busy."""
    try:
        Path("/proc/self/comm").write_text(name[:15])
    except OSError:
        pass


def _tag_log_records(index: int) -> None:
    """Every log line of this worker carries worker=N (logs.py prints extra record fields)."""
    make_record = logging.getLogRecordFactory()

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.worker = index
        return record

    logging.setLogRecordFactory(tagged)


def supervise(config: Config) -> None:
    """Run config.workers workers on one port until SIGTERM/SIGINT (`serve --workers N`)."""
    setup_logging(config.log_level, config.log_format)
    if config.rate_limits_on and not config.rate_limit_url:
        log.warning("rate limits are counted per worker (up to %d× rate_limit_per_s per user): "
                    "set rate_limit_redis to share them", config.workers)
    supervisor = _Supervisor(config)

    def on_signal(signum: int, frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for worker in supervisor.workers:
            supervisor.start(worker)
        supervisor.wait_ready()
        if supervisor.stopping:
            return
        host = config.host
        print(f"livecomments {config.role} ({config.strategy}) listening on http://{host}:{supervisor.port} "
              f"({config.workers} workers)", flush=True)
        supervisor.watch()
        log.info("shutting down %d workers", config.workers)
    finally:
        supervisor.stop()
