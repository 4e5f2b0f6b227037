"""`livecomments bench hotvideo`: one hot video at 10,000, 20,000 and 50,000 viewers, at rising rates.

Where does one realtime process break with a hot video, and why (issue 20)? Every server-side process
(servers, workers, redis-server, HAProxy) is pinned to core 0 and its CPU summed; the load generator
(hotvideo_load.py and its lazy helpers) to core 1. The load generator costs far less than the server:
most viewers read lazily, one recv per viewer every 200 ms whatever the rate, and a sample of a few
hundred reads eagerly to time each comment from its post to its first and its last viewer.

Each viewer is a descriptor in the server, and the hard open-files limit (`ulimit -Hn`) caps every
process: a viewer count one process cannot hold is run at the largest it can, computed from the
limit (resource.getrlimit), and the report says which counts could not run and why.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from collections.abc import Callable
from typing import Any

from livecomments.benchmarks.common import raise_nofile
from livecomments.benchmarks.fanout import run, servers
from livecomments.benchmarks.hotvideo_load import LATE_CAP, OVERLOAD_STEPS
from livecomments.benchmarks.hotvideo_report import build, chart, findings, markdown, progress_line
from livecomments.edge.admission import FD_HEADROOM
from livecomments.ops.procs import SBIN_PATH, RedisUnavailable, redis_binary

VIEWERS = [10_000, 20_000, 50_000]
RATES = [2.0, 5.0, 10.0, 20.0, 50.0, 200.0, 1000.0]  # comments/s, at every viewer count
TARGETS = list(servers.HOTVIDEO)
DEFAULT_TARGETS = ["one-process", "one-process-fixed20", "floor", "floor-unbatched", "workers-2"]
QUICK_TARGETS = ["one-process", "floor", "workers-2", "haproxy-2"]
SPREAD = 0.97  # SO_REUSEPORT spreads connections by hash, not evenly: a worker may get a little more
DRAIN = 5.0  # seconds after a step for every viewer to get every comment


def capacity(name: str, hard: int) -> int:
    """The most viewers a target holds under a hard open-files limit of `hard`, in steps of 500.
    A livecomments process keeps FD_HEADROOM descriptors spare and HOT_CONNECTIONS for connections;
    HAProxy holds two per viewer; workers hold one limit each."""
    kind, processes, _ = servers.HOTVIDEO[name]
    if kind == "floor":
        total = hard - 100
    elif kind == "haproxy":
        total = (hard - 100) // 2
    else:
        total = processes * (hard - FD_HEADROOM - servers.HOT_CONNECTIONS - 100)
        total = int(total * (SPREAD if processes > 1 else 1))
    return max(0, total // 500 * 500)


def counts_for(names: list[str], wanted: list[int], hard: int) -> dict[str, list[int]]:
    """The viewer counts each target runs: those wanted that fit, and in place of the others the largest
    that fits. One-process targets share one capacity (the smallest of them), so they are compared at
    equal counts."""
    one = min((capacity(n, hard) for n in names if servers.HOTVIDEO[n][1] == 1), default=0)
    out = {}
    for name in names:
        most = one if servers.HOTVIDEO[name][1] == 1 else capacity(name, hard)
        out[name] = sorted({min(v, most) for v in wanted})
    return out


def missing(name: str) -> str | None:
    """Why a target cannot run on this machine (a tool not installed), or None."""
    kind = servers.HOTVIDEO[name][0]
    if kind in ("workers", "haproxy"):
        try:
            redis_binary()
        except RedisUnavailable as e:
            return str(e)
    if kind == "haproxy" and shutil.which("haproxy", path=SBIN_PATH) is None:
        return "haproxy is not installed: sudo apt-get install haproxy"
    return None


def run_target(name: str, viewers: int, rates: list[float], settings: run.Settings,
               cores: tuple[int | None, int | None]) -> dict[str, Any]:
    """fanout/run.py's run_target with the hot-video load generator (lazy viewers, a timed sample)."""
    extra = ("--drain", str(DRAIN), *(("--server-core", str(cores[0])) if cores[0] is not None else ()))
    budget = (120 + viewers / 500 + len(rates) * (settings.warmup + settings.duration + DRAIN + 3)
              + (OVERLOAD_STEPS + 1) * LATE_CAP)  # the steps past the break may wait for late comments
    result = run.run_target(name, viewers, rates, settings, cores, "livecomments.benchmarks.hotvideo_load", extra, budget)
    result["spread"] = (result["memory"] or {}).get("served_by")
    return result


def run_all(settings: run.Settings, echo: Callable[[str], None] = print) -> dict[str, Any]:
    raise_nofile()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 1 << 30 if hard == resource.RLIM_INFINITY else hard
    for name in list(settings.targets):
        why = missing(name)
        if why:
            settings.targets.remove(name)
            settings.skipped.append(f"{name} skipped: {why}")
            echo(settings.skipped[-1])
    plan = counts_for(settings.targets, settings.viewers, hard)
    limits: dict[str, Any] = {"hard": hard, "capacity": {name: capacity(name, hard) for name in settings.targets},
              "wanted": settings.viewers, "cannot_run": cannot_run(plan, settings.viewers, hard)}
    for line in limits["cannot_run"]:
        echo(line)
    cores = run.cores_for(settings)
    rates = settings.rates or RATES
    started, results = time.time(), []
    for viewers in sorted({v for counts in plan.values() for v in counts}):
        for name in settings.targets:
            if viewers in plan[name]:
                result = run_target(name, viewers, rates, settings, cores)
                results.append(result)
                echo(progress_line(result))
    doc = build(results, settings, cores, time.time() - started, limits)
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "hotvideo.json").write_text(json.dumps(doc, indent=1))
    (settings.out / "hotvideo.md").write_text(markdown(doc))
    chart(doc, settings.out / "hotvideo.png")
    echo("\n" + "\n\n".join(findings(doc)))
    echo(f"wrote {settings.out}/hotvideo.json, hotvideo.md, hotvideo.png in {time.time() - started:.0f} s")
    return doc


def cannot_run(plan: dict[str, list[int]], wanted: list[int], hard: int) -> list[str]:
    """One line per target whose wanted counts do not fit, with what it runs instead."""
    lines = []
    for name, counts in plan.items():
        too_many = [v for v in wanted if v not in counts]
        if too_many:
            kind, processes, _ = servers.HOTVIDEO[name]
            per = ("HAProxy holds 2 descriptors per viewer" if kind == "haproxy" else
                   f"each viewer is a descriptor in one of its {processes} processes" if processes > 1 else
                   "each viewer is a descriptor in its one process")
            lines.append(f"{name}: {', '.join(f'{v:,}' for v in too_many)} viewers cannot run here ({per}, and "
                         f"the hard open-files limit is {hard:,}, `ulimit -Hn`); it runs {max(counts):,} instead, the "
                         "most that fits")
    return lines

