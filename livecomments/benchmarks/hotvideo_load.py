"""The hot-video load generator: lazy viewers, an eager sample, a paced poster, and what each step cost.

Most viewers are lazy (hotvideo_lazy.py, in helper processes of at most the open-files limit each):
one recv per viewer per sweep whatever the rate, so the client stays far cheaper than the server
and does not time its own reading. A sample of a few hundred reads through this process's loop
(hotvideo_sample.py) and times each comment; it joins in parts around the lazy viewers, so it holds
viewers that joined first and last. Posts go out paced at each step's rate (fanout/loadgen.py's posters).

Per step: p50/p99 over the sample, the first and last viewer (the serial send), the server's own
pass (`delivery_latency`: created → the fan-out wrote its last viewer, mean, from /metrics when the
server has one), CPU of every server-side process (user and kernel), how busy the server's core was
(softirq included: the loopback's receive path, which no process's CPU shows), CPU of every load
process (all on one core: past 90% the step is the client's limit), RSS, and whether every viewer
got every comment. A step past the 200 ms bound is followed by up to OVERLOAD_STEPS more, to show how
an overloaded video degrades. One JSON object per line on stdout, as loadgen.py writes them.

    python -m livecomments.benchmarks.hotvideo_load --port P --pid SERVER_PID --viewers 10000 --rates 2,5,10
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop

from livecomments.benchmarks.common import TICKS, cpu_seconds, parse_metrics, raise_nofile, rss_bytes
from livecomments.benchmarks.fanout.loadgen import LoadGen, emit
from livecomments.benchmarks.hotvideo_lazy import LazyProcess
from livecomments.benchmarks.hotvideo_sample import Sample, Timings

SAMPLE = 250  # eager viewers (at most a quarter of them all)
ROUNDS = 8  # the sample joins in ROUNDS + 1 parts around ROUNDS parts of the lazy viewers
SPARE = 200  # descriptors a lazy process keeps for itself (stdio, pipes) below the hard limit
OVERLOAD_STEPS = 2  # steps run past the latency bound, to show the degradation
BOUND_MS = 200.0
STALLED, LATE_CAP = 3.0, 30.0  # seconds: a viewer still missing comments then has lost them


def per_process() -> int:
    """Lazy viewers one helper process holds: the hard open-files limit, less its own descriptors, and
    the ephemeral ports its one source address has to reach the server's one port with."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default range
    return min(1 << 30 if hard == resource.RLIM_INFINITY else hard, high - low) - SPARE


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (i < n % parts) for i in range(parts)]


class HotLoad:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.pids = args, args.pid
        self.gen = LoadGen(args.port, args.pid)  # the posters
        self.samples: list[Sample] = []
        self.lazies: list[LazyProcess] = []
        self.timings = Timings()
        self.base = 0  # posts before the viewers' first comment: every viewer must get every later one
        self.metrics0: dict[str, float] = {}  # the server's, once every viewer is live

    async def connect(self, viewers: int) -> None:
        """The sample in ROUNDS + 1 parts around ROUNDS parts of the lazy viewers, spread over helpers."""
        sample = min(SAMPLE, max(1, viewers // 4))
        lazy = viewers - sample
        for i in range(math.ceil(lazy / per_process())):  # each from its own address: 127.0.0.2, .3, …
            self.lazies.append(await LazyProcess.start(self.args.port, f"127.0.0.{2 + i}"))
        parts = split(sample, ROUNDS + 1)
        for i, part in enumerate(split(lazy, ROUNDS)):
            await self.connect_sample(parts[i])
            await asyncio.gather(*(p.ask(f"connect {n}") for p, n in zip(self.lazies, split(part, len(self.lazies)),
                                                                          strict=True) if n))
        await self.connect_sample(parts[-1])

    async def connect_sample(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            sample = Sample(self.timings, self.gen.stream_req)
            async with asyncio.timeout(30):
                await loop.create_connection(lambda s=sample: s, "127.0.0.1", self.args.port)  # type: ignore[misc]
                await sample.live
            self.samples.append(sample)

    def served_by(self) -> dict[str, int]:
        counts = Counter(s.served_by for s in self.samples)
        for lazy in self.lazies:
            counts.update(lazy.reply.get("served_by", {}))
        return dict(counts)

    async def complete(self, timeout: float) -> dict[str, int]:
        """Until every viewer has every comment posted: what is missing, extra, closed. Past the timeout it
        waits on while comments still arrive (an overloaded server is late, which is not a loss), up to
        STALLED seconds without progress or LATE_CAP in all."""
        start = time.monotonic()
        progress, last = start, None
        while True:
            expected = self.gen.posted - self.base  # answered; those in flight may be stored or not
            most = expected + in_flight(self.gen)
            replies = await asyncio.gather(*(p.ask(f"count {expected} {most}") for p in self.lazies))
            behind = [s for s in self.samples if s.count < expected]
            got = {
                "missing": sum(r["missing"] for r in replies) + sum(expected - s.count for s in behind),
                "duplicated": sum(r["ahead"] for r in replies) + sum(s.count > most or s.disorder > 0
                                                                     for s in self.samples),
                "closed": sum(r["closed"] for r in replies) + self.timings.lost,
            }
            now = time.monotonic()
            if got["missing"] != last:
                progress, last = now, got["missing"]
            late = now - start > timeout and (now - progress > STALLED or now - start > LATE_CAP)
            if not got["missing"] or got["closed"] or late:
                return got
            await asyncio.sleep(0.25)

    def load_cpu(self) -> dict[str, float]:
        """CPU seconds of every load process: this one and each lazy helper."""
        mine = os.times()
        cpu = {"sample+posters": mine.user + mine.system}
        for i, lazy in enumerate(self.lazies, 1):
            cpu[f"lazy{i}"] = cpu_seconds(lazy.proc.pid)
        return cpu

    def snapshot(self) -> dict[str, Any]:
        """Counters now; the server's /metrics as a task, so a slow answer does not pause the posts."""
        return {"t": time.time(), "cpu": {pid: cpu_split(pid) for pid in self.pids}, "load": self.load_cpu(),
                "posted": self.gen.posted, "core": core_jiffies(self.args.server_core),
                "metrics": asyncio.ensure_future(metrics(self.args.port))}


def in_flight(gen: LoadGen) -> int:
    """Posts sent and not answered yet, on connections still open (a closed one answers nothing more)."""
    return sum(p.busy and p.transport is not None and not p.transport.is_closing() for p in gen.posters)


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of a process; (0, 0) once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def core_jiffies(core: int | None) -> tuple[int, int, int]:
    """(busy, softirq, all) jiffies of one core (every core: None) from /proc/stat. Busy counts the kernel's
    work for anyone on it, ksoftirqd's included, which no process's own CPU shows."""
    name = "cpu" if core is None else f"cpu{core}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == name:
            ticks = [int(f) for f in fields[1:9]]  # user nice system idle iowait irq softirq steal
            return sum(ticks) - ticks[3] - ticks[4], ticks[6], sum(ticks)
    return 0, 0, 0


async def metrics(port: int) -> dict[str, float]:
    """The server's /metrics as {name: value}; {} when it has none (the floor) or did not answer."""
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            length = re.search(rb"\r\ncontent-length: *(\d+)", head)  # the floor answers but never closes
            body = await (reader.readexactly(int(length.group(1))) if length else reader.read())
            writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return {}
    return parse_metrics(body.decode(errors="replace"))


def delta(a: dict[str, float], b: dict[str, float], name: str) -> float | None:
    return b[name] - a[name] if name in a and name in b else None


async def step(load: HotLoad, rate: float) -> dict[str, Any]:
    args, gen = load.args, load.gen
    viewers = len(load.samples) + sum(lazy.reply["connected"] for lazy in load.lazies)
    load.timings.reset(rate, len(load.samples))
    gen.issued, start = 0, time.monotonic()
    await gen.post_at(rate, start, args.warmup)
    a = load.snapshot()
    await gen.post_at(rate, start, args.warmup + args.duration)
    b = load.snapshot()
    backlog, gen.due = gen.due, 0
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline and in_flight(gen):
        await asyncio.sleep(0.005)
    check = await load.complete(max(0.0, deadline - time.monotonic()))
    after = await metrics(args.port)
    window = b["t"] - a["t"]
    user = sum(b["cpu"][pid][0] - a["cpu"][pid][0] for pid in load.pids)
    kernel = sum(b["cpu"][pid][1] - a["cpu"][pid][1] for pid in load.pids)
    busy, softirq, ticks = (y - x for x, y in zip(a["core"], b["core"], strict=True))
    ticks = max(1, ticks)
    posts = b["posted"] - a["posted"]
    delivered = posts * viewers  # every one of them reached every viewer, or `missing` says so
    lg = {name: b["load"][name] - a["load"][name] for name in b["load"]}
    lg_frac = sum(lg.values()) / window
    scraped = [await a["metrics"], await b["metrics"]]
    pass_s, pass_n = (delta(scraped[0], scraped[1], f"livecomments_delivery_latency_seconds_{k}")
                      for k in ("sum", "count"))
    return {
        "rate": rate, "viewers": viewers, "window_s": round(window, 3),
        "posts_per_s": round(posts / window, 1), "post_backlog": backlog,
        "deliveries_per_s": round(delivered / window), "expected_per_s": round(rate * viewers),
        "server_cpu_s": round(user + kernel, 3), "server_cpu_frac": round((user + kernel) / window, 3),
        "server_kernel_frac": round(kernel / window, 3),
        "core_busy_frac": round(busy / ticks, 3), "core_softirq_frac": round(softirq / ticks, 3),
        "cpu_s_by_pid": {str(pid): round(sum(b["cpu"][pid]) - sum(a["cpu"][pid]), 3) for pid in load.pids},
        "cpu_us_per_delivery": round((user + kernel) / delivered * 1e6, 3) if delivered else None,
        **load.timings.summary(a["t"], b["t"], len(load.samples)),
        "server_pass_ms": round(pass_s / pass_n * 1000, 1) if pass_s is not None and pass_n else None,
        "rss_bytes": sum(map(rss_bytes, load.pids)),
        "missing": check["missing"], "duplicated": check["duplicated"], "lost_connections": check["closed"],
        "cut_slow": int(delta(load.metrics0, after, "livecomments_slow_viewers_disconnected_total") or 0),
        "post_errors": gen.errors,
        "loadgen_cpu_frac": round(lg_frac, 3), "loadgen_saturated": lg_frac >= 0.9,
        "loadgen_cpu_by_process": {name: round(cpu / window, 3) for name, cpu in lg.items()},
        "sample": len(load.samples), "load_processes": 1 + len(load.lazies),
    }


def verdict(s: dict[str, Any]) -> tuple[str, bool]:
    """Why the step failed ("" if it held), and whether that is past recovering (loss, not latency)."""
    if s["lost_connections"]:
        return ("viewers cut as slow" if s["cut_slow"] else "viewers disconnected"), True
    if s["post_errors"]:
        return "posts failed", True
    if s["missing"]:
        return "comments lost (viewers behind after the drain)", True
    if s["duplicated"]:
        return "comments duplicated or out of order", True
    if s["post_backlog"] > 2 + 0.1 * s["rate"]:  # > 100 ms behind
        return "posts not accepted at the rate", True
    if s["p99_ms"] is None:
        return "no latency samples", True
    return ("p99 > 200 ms" if s["p99_ms"] > BOUND_MS else ""), False


async def run(args: argparse.Namespace) -> None:
    load = HotLoad(args)
    gen = load.gen
    await gen.start_posters()
    gen.due += 1  # the first comment of the video: storage and the hub warm before the baseline
    gen.on_idle(gen.idle.pop())
    async with asyncio.timeout(30):
        while in_flight(gen):
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    rss0 = sum(map(rss_bytes, load.pids))
    t = time.monotonic()
    try:
        await load.connect(args.viewers)
        connect_s = time.monotonic() - t
        await asyncio.sleep(1.0)
        rss1 = sum(map(rss_bytes, load.pids))
        emit(kind="memory", viewers=args.viewers, rss_none=rss0, rss_idle=rss1, connect_s=round(connect_s, 2),
             bytes_per_viewer=round((rss1 - rss0) / args.viewers), served_by=load.served_by(),
             sample=len(load.samples), lazy_processes=len(load.lazies))
        # Fresh posters: servers close keep-alive connections left idle while viewers connected.
        for poster in gen.posters:
            assert poster.transport is not None
            poster.transport.close()
        gen.posters, gen.idle = [], []
        await gen.start_posters()
        load.base = gen.posted
        load.metrics0 = await metrics(args.port)
        gen.due += 1  # one comment reaches every viewer before the first step
        gen.on_idle(gen.idle.pop())
        check = await load.complete(20.0)
        if check["missing"] or check["closed"]:
            raise RuntimeError(f"viewers not live: {check}")
        past = 0
        for rate in args.rates:
            result = await step(load, rate)
            result["failed"], hard = verdict(result)
            result["overload"] = past > 0
            emit(kind="step", **result)
            past += bool(result["failed"])
            if hard or past > OVERLOAD_STEPS:
                break
            await asyncio.sleep(0.2)
    finally:
        await asyncio.gather(*(lazy.stop() for lazy in load.lazies))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, action="append", required=True, help="server-side pids (CPU, RSS)")
    parser.add_argument("--viewers", type=int, required=True)
    parser.add_argument("--rates", type=lambda s: [float(r) for r in s.split(",")], required=True)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--drain", type=float, default=5.0)
    parser.add_argument("--server-core", type=int, default=None, help="the core the server side is pinned to")
    args = parser.parse_args()
    raise_nofile(1 << 30)
    try:
        uvloop.run(run(args))
    except Exception as e:  # one line for the driver, not a traceback per viewer
        emit(kind="error", error=f"{type(e).__name__}: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
