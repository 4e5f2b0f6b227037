"""One strategy's scripted scenario: a writer and two realtime processes on PostgreSQL (or
DynamoDB: stores.py), over Redis (or, for the dispatcher, an etcd registry), viewers and posters running throughout while
the script breaks one thing after another, then the checker.

Holding a fault for `hold` seconds is the scenario itself, not a synchronisation.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from livecomments.benchmarks.chaos.check import Summary, caught_up, stored_comments, summarize
from livecomments.benchmarks.chaos.clients import Poster, StalledViewer, Viewer
from livecomments.benchmarks.chaos.nodes import Node, PeakRss, signal_tree
from livecomments.benchmarks.chaos.stores import ChaosStore
from livecomments.benchmarks.common import parse_metrics
from livecomments.edge.stream import TCP_USER_TIMEOUT_MS
from livecomments.ops.procs import RedisServer, free_port
from livecomments.ops.services import EtcdServer

SECRET = "chaos-secret"
FLOOD = "flood"  # big comments on this video: its viewers get them through the faults, then the stalled one
FLOOD_PAD = 50_000  # its SSE line stays under the 128 KiB an aiohttp reader takes
FLOOD_PAUSE = 0.05
FLOOD_PARALLEL = 4  # posts in flight while flooding the stalled viewer: a slow store (moto) keeps pace
VIEWER_BUFFER = 64 * 1024
SLOW_CUT = "livecomments_slow_viewers_disconnected_total"
GIVE_UP = 90.0  # posters finish their in-flight post (its retries are bounded by clients.GIVE_UP_AFTER)


@dataclass(frozen=True)
class Strategy:
    label: str
    strategy: str
    partitions: int


STRATEGIES = [
    Strategy("broadcast", "broadcast", 64),
    Strategy("partitioned", "partitioned", 64),
    Strategy("partitioned-0", "partitioned", 0),
    Strategy("dispatcher", "dispatcher", 0),
]


@dataclass(frozen=True)
class Settings:
    viewers: int  # all of them drop and reconnect at once in one step
    videos: int
    posters: int
    post_pause: float
    hold: float  # seconds each fault lasts
    settle: float  # seconds to wait for every viewer to catch up at the end


QUICK = Settings(viewers=200, videos=10, posters=4, post_pause=0.1, hold=1.0, settle=15.0)
FULL = Settings(viewers=1000, videos=20, posters=8, post_pause=0.1, hold=4.0, settle=30.0)


class System:
    def __init__(self, strategy: Strategy, store: ChaosStore, workdir: Path) -> None:
        self.strategy = strategy
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        dispatcher = strategy.strategy == "dispatcher"
        # The dispatcher's moving part is its registry; the others' is the broker.
        self.service: RedisServer | EtcdServer = (
            EtcdServer(workdir / "etcd") if dispatcher else RedisServer(workdir / "redis"))
        self.store = store
        common = ["--strategy", strategy.strategy, "--partitions", str(strategy.partitions),
                  "--storage", store.database(), "--viewer-buffer", str(VIEWER_BUFFER),
                  "--max-text", str(FLOOD_PAD + 100), "--ping-interval", "2", "--registry-ttl", "2",
                  "--log-level", "warning"]
        common += (["--registry", self.service.url, "--cluster-secret", SECRET] if dispatcher
                   else ["--broker", self.service.url])
        self.nodes: list[Node] = []
        self.failed_starts: list[str] = []
        for name, role in (("writer", "writer"), ("rt0", "realtime"), ("rt1", "realtime")):
            port = free_port()
            self.nodes.append(Node(name, ["--role", role, *common, "--port", str(port), "--server-id", name,
                                          "--advertise-url", f"http://127.0.0.1:{port}"], workdir))

    @property
    def writer(self) -> Node:
        return self.nodes[0]

    @property
    def realtimes(self) -> list[Node]:
        return self.nodes[1:]

    async def start(self) -> None:
        await asyncio.to_thread(self.service.start)
        await asyncio.gather(*(self.supervise(node) for node in self.nodes))

    async def supervise(self, node: Node, attempts: int = 5) -> None:
        """Start a node as a supervisor would (systemd Restart=on-failure): a start that fails is
        counted, logged, and tried again."""
        for attempt in range(attempts):
            try:
                await asyncio.to_thread(node.start)
                return
            except (RuntimeError, TimeoutError) as e:
                self.failed_starts.append(f"{node.name}: {str(e).splitlines()[0][:200]}")
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.5)

    def kill_service(self) -> None:
        """kill -9 the broker (or registry): an outage, not a shutdown."""
        if isinstance(self.service, RedisServer):
            self.service.stop(signal.SIGKILL)
        else:
            self.service.stop()  # EtcdServer.stop is SIGKILL

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        self.kill_service()


Step = tuple[str, Callable[[], Awaitable[None]]]


def steps(system: System, viewers: list[Viewer], hold: float) -> list[Step]:
    async def restart(node: Node) -> None:
        await asyncio.to_thread(node.kill)
        await asyncio.sleep(hold)
        await system.supervise(node)

    async def service_down() -> None:
        await asyncio.to_thread(system.kill_service)
        await asyncio.sleep(hold)
        await asyncio.to_thread(system.service.start)

    async def freeze(pid: int) -> None:
        signal_tree(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(hold)
        finally:
            signal_tree(pid, signal.SIGCONT)

    async def service_frozen() -> None:
        assert system.service.proc is not None
        await freeze(system.service.proc.pid)

    async def store_down() -> None:
        await asyncio.to_thread(system.store.down)
        await asyncio.sleep(hold)
        await asyncio.to_thread(system.store.up)

    async def store_frozen() -> None:
        await freeze(system.store.pid())

    async def reconnect_all() -> None:
        for viewer in viewers:
            viewer.drop()
        await asyncio.sleep(hold)

    async def steady() -> None:
        await asyncio.sleep(hold)

    kind = "etcd" if isinstance(system.service, EtcdServer) else "redis"
    return [
        ("steady", steady),
        ("kill -9 writer", lambda: restart(system.writer)),
        ("kill -9 realtime rt0", lambda: restart(system.realtimes[0])),
        (f"{kind} killed and restarted", service_down),
        (f"{kind} SIGSTOP/SIGCONT", service_frozen),
        (f"{system.store.name} stopped and started", store_down),
        (f"{system.store.name} SIGSTOP/SIGCONT", store_frozen),
        (f"{len(viewers)} simultaneous reconnects", reconnect_all),
        ("steady", steady),
    ]


async def run(strategy: Strategy, settings: Settings, store: ChaosStore, workdir: Path,
              log: Callable[[str], None]) -> Summary:
    started = time.monotonic()
    system = System(strategy, store, workdir)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=20)
    connector = aiohttp.TCPConnector(limit=0)
    try:
        await system.start()
        with PeakRss(system.nodes) as rss:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                summary = await _drive(system, settings, session, log)
        summary.peak_rss_mb = {name: b / 2**20 for name, b in rss.peak.items()}
    finally:
        await asyncio.to_thread(system.stop)
    summary.seconds = time.monotonic() - started
    return summary


def kernel_send_buffer() -> int:
    """The most a server socket's send buffer grows to (autotuned: a few MB on loopback)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 << 20


async def slow_cuts(session: aiohttp.ClientSession, realtime_url: str) -> float:
    async with session.get(f"{realtime_url}/metrics") as resp:
        return parse_metrics(await resp.text()).get(SLOW_CUT, 0)


async def flood_until_cut(session: aiohttp.ClientSession, flood: Poster, stalled: StalledViewer,
                          realtime_url: str, log: Callable[[str], None]) -> bool:
    """Whether the stalled viewer, once it stops reading, is cut at the server's bound while its
    peers read on: big comments posted until the server counts one slow viewer (it alone) and
    its stream has ended. What it is owed is counted in bytes acked since it stalled: the
    kernel's buffers (sender's autotuned send buffer) and viewer_buffer hold less than half the
    budget, so a server still holding it past the budget is at fault. The flood must outrun
    TCP_USER_TIMEOUT (the kernel drops a zero window that old, not counted as slow): posting
    slower than that says nothing of the bound, and is reported as such."""
    budget = 2 * (kernel_send_buffer() + VIEWER_BUFFER)
    before = await slow_cuts(session, realtime_url)
    if not await stalled.stall():
        log("stalled viewer: its stream ended before it stalled")
        return False
    started, first = time.monotonic(), len(flood.acked)
    sent = 0
    while True:
        cuts = await slow_cuts(session, realtime_url) - before
        elapsed = time.monotonic() - started
        if cuts:
            ended = await stalled.ended()
            log(f"stalled viewer: {cuts:g} slow cut(s) after {sent / 2**20:.1f} MB in {elapsed:.1f} s; "
                f"its stream {'ended' if ended else 'still open'}")
            return cuts == 1 and ended
        if sent >= budget or elapsed * 1000 > TCP_USER_TIMEOUT_MS:
            why = ("the server still holds it" if sent >= budget else
                   f"too slow a flood to test the bound: TCP_USER_TIMEOUT ({TCP_USER_TIMEOUT_MS / 1000:g} s) comes first")
            log(f"stalled viewer: not cut after {sent / 2**20:.1f} MB in {elapsed:.1f} s: {why}")
            return False
        await asyncio.gather(*(flood.post_next(session) for _ in range(FLOOD_PARALLEL)))
        sent = sum(len(ack.text) for ack in flood.acked[first:])


async def _drive(system: System, settings: Settings, session: aiohttp.ClientSession,
                 log: Callable[[str], None]) -> Summary:
    urls = [node.url for node in system.realtimes]
    videos = [f"v{i}" for i in range(settings.videos)]
    # rt1 is never killed: the stalled viewer's cut is the server's doing, not a crash's. It reads
    # through the faults and stalls once they are over (StalledViewer says why).
    stalled = await StalledViewer.open(urls[1], FLOOD)
    viewers = [Viewer(videos[i % len(videos)], urls, pick=i) for i in range(settings.viewers)]
    viewers += [Viewer(FLOOD, urls, pick=i) for i in range(2)]
    tasks = [asyncio.create_task(v.run(session)) for v in viewers]
    stop = asyncio.Event()
    posting: list[asyncio.Task[None]] = []
    posters = [Poster(f"p{i}", system.writer.url, videos[i::settings.posters] or videos, settings.post_pause)
               for i in range(settings.posters)]
    posters.append(Poster("flood", system.writer.url, [FLOOD], FLOOD_PAUSE, pad=FLOOD_PAD))
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(v.connected.wait() for v in viewers))
        posting += [asyncio.create_task(p.run(session, stop)) for p in posters]
        for name, step in steps(system, viewers, settings.hold):
            log(f"  {system.strategy.label}: {name} ({sum(len(p.acked) for p in posters)} acked so far)")
            await step()
        stop.set()
        async with asyncio.timeout(GIVE_UP):
            await asyncio.gather(*posting)
        stalled_cut = await flood_until_cut(session, posters[-1], stalled, urls[1],
                                            lambda line: log(f"  {system.strategy.label}: {line}"))
        stored = {v: await stored_comments(session, system.writer.url, v) for v in [*videos, FLOOD]}
        deadline = time.monotonic() + settings.settle
        while time.monotonic() < deadline and not all(caught_up(v, stored) for v in viewers):
            await asyncio.sleep(0.2)  # viewers catch up by themselves (repair, reconnect): poll their state
    finally:
        await stalled.close()
        for task in [*tasks, *posting]:
            task.cancel()
        await asyncio.gather(*tasks, *posting, return_exceptions=True)
    summary = summarize(system.strategy.label, viewers, [a for p in posters for a in p.acked], stored,
                        rejected=sum(len(p.rejected) for p in posters), gave_up=sum(p.gave_up for p in posters))
    summary.stalled_cut = stalled_cut
    summary.failed_starts = len(system.failed_starts)
    for failure in system.failed_starts[:3]:
        log(f"  {system.strategy.label}: a start failed: {failure}")
    for poster in posters:
        for rejection in poster.rejected[:3]:
            log(f"  {system.strategy.label}: {poster.name} rejected: {rejection}")
    return summary

