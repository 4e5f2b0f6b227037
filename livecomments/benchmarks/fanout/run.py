"""Driver: the same load against livecomments (its batch modes), the floor and the peer.

For each viewer count W and each target, a fresh server starts pinned to core 0 and a load
generator process pinned to core 1 measures idle memory, then raises the comment rate until a
step fails (p99 > 200 ms, viewers behind or cut, posts not accepted). The default rates are
offered deliveries/s of 5k … 2M, i.e. comments/s = deliveries / W: at 1,000 viewers 5 … 2,000
comments/s, which holds the rates of the paced goals (50 and 2,000/s, report.py). `livecomments bench fanout`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livecomments.benchmarks.common import raise_nofile
from livecomments.benchmarks.fanout import report, servers

DEFAULT_DELIVERIES = [5_000, 10_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000]
QUICK = {"viewers": [200], "duration": 0.5, "warmup": 0.2, "rates": [50.0, 500.0]}


@dataclass
class Settings:
    out: Path
    viewers: list[int] = field(default_factory=lambda: [1000, 5000, 10000])
    rates: list[float] | None = None  # comments/s steps; None: DEFAULT_DELIVERIES over W
    duration: float = 1.0  # measured seconds per step
    warmup: float = 0.3  # seconds at each rate before measuring
    targets: list[str] = field(default_factory=lambda: list(servers.TARGETS))
    quick: bool = False
    pin: bool = True  # server on core 0, load generator on core 1
    skipped: list[str] = field(default_factory=list)  # one line per target left out, for the report


def rates_for(settings: Settings, viewers: int, deliveries: list[int] = DEFAULT_DELIVERIES) -> list[float]:
    """settings.rates, else comments/s offering each of `deliveries` per second to `viewers`."""
    # At least 2 comments/s: a slower rate leaves a 1 s window without a post to time.
    return settings.rates or sorted({max(2.0, round(d / viewers, 2)) for d in deliveries})


LOADGEN = "livecomments.benchmarks.fanout.loadgen"


def run_target(
    name: str, viewers: int, rates: list[float], settings: Settings, cores: tuple[int | None, int | None],
    load: str = LOADGEN, extra: tuple[str, ...] = (), budget: float | None = None,
) -> dict[str, Any]:
    """One server started for `viewers`, a load generator's steps against it (`load`, a module taking
    the loadgen's arguments and `extra`), filed by add_row. `budget`: seconds the load may take."""
    result: dict[str, Any] = {"target": name, "viewers": viewers, "steps": [], "memory": None, "error": None}
    try:
        server = servers.start(name, cores[0], viewers)
    except (RuntimeError, TimeoutError, OSError) as e:  # a row that says so; the other targets still run
        result["error"] = f"did not start: {e}"
        return result
    result["processes"] = {str(pid): label for pid, label in server.labels.items()}  # steps' cpu_s_by_pid
    try:
        argv = [sys.executable, "-m", load, "--port", str(server.port),
                "--viewers", str(viewers), "--rates", ",".join(str(r) for r in rates),
                "--duration", str(settings.duration), "--warmup", str(settings.warmup), *extra]
        for pid in server.pids:
            argv += ["--pid", str(pid)]
        if budget is None:
            budget = 90 + len(rates) * (settings.warmup + settings.duration + 3)
        for row in loadgen_rows(argv, cores[1], budget):
            add_row(result, row)
    finally:
        server.stop()
    return result


def loadgen_rows(argv: list[str], core: int | None, budget: float) -> list[dict[str, Any]]:
    """Run a load generator (argv) pinned to core; its JSON lines, with an error row if it failed."""
    try:
        out = subprocess.run(servers.pinned(core, argv), capture_output=True, timeout=budget, preexec_fn=raise_nofile)
    except subprocess.TimeoutExpired:
        return [{"kind": "error", "error": f"load generator still running after {budget:.0f} s"}]
    rows = [json.loads(line) for line in out.stdout.decode().splitlines() if line.startswith("{")]
    if out.returncode and not any(row["kind"] == "error" for row in rows):
        rows.append({"kind": "error", "error": out.stderr.decode(errors="replace")[-500:]})
    return rows


def add_row(result: dict[str, Any], row: dict[str, Any]) -> None:
    """File one load-generator row into a target's result: its memory, a step, or its error."""
    kind = row.pop("kind")
    if kind == "memory":
        result["memory"] = row
    elif kind == "step":
        result["steps"].append(row)
    else:
        result["error"] = row["error"]


def drop_missing_peer(settings: Settings) -> None:
    """The peer needs its own venv; without it the floor and livecomments still run, and the report says so."""
    if "peer" in settings.targets and not servers.PEER_PYTHON.exists():
        settings.targets.remove("peer")
        settings.skipped.append(
            f"peer skipped: its stack is not installed in {servers.PEER_VENV} "
            "(`livecomments bench fanout --setup-peer` installs it)"
        )


def cores_for(settings: Settings) -> tuple[int | None, int | None]:
    """(server core, load generator core): 0 and 1 when pinning and there are two cores, else unpinned."""
    return (0, 1) if (os.cpu_count() or 1) >= 2 and settings.pin else (None, None)


def run(settings: Settings, echo: Callable[[str], None] = print) -> dict[str, Any]:
    raise_nofile()
    drop_missing_peer(settings)
    for note in settings.skipped:
        echo(note)
    cores = cores_for(settings)
    started = time.time()
    results = []
    for viewers in settings.viewers:
        for name in settings.targets:
            res = run_target(name, viewers, rates_for(settings, viewers), settings, cores)
            results.append(res)
            echo(report.progress_line(res))
    doc = report.build(results, settings, cores, time.time() - started)
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "fanout.json").write_text(json.dumps(doc, indent=1))
    (settings.out / "fanout.md").write_text(report.markdown(doc))
    report.chart(doc, settings.out / "fanout.png")
    echo(report.summary(doc))
    echo(f"wrote {settings.out}/fanout.json, fanout.md, fanout.png in {time.time() - started:.0f} s")
    return doc
