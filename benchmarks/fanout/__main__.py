"""Driver: the same load against livecomments (three batch modes), the floor and the peer.

    python -m benchmarks.fanout [--viewers 1000,5000,10000] [--rates 10,50,…] [--duration 1.5]
                                [--targets name,…] [--quick] [--setup-peer] [--out benchmarks/results]

For each viewer count W and each target, a fresh server starts pinned to core 0 and a
load generator process pinned to core 1 measures idle memory, then raises the comment
rate until a step fails (p99 > 200 ms, viewers behind or cut, posts not accepted). The
default rates are offered deliveries/s of 5k … 2M, i.e. comments/s = deliveries / W.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.fanout import report, servers

DEFAULT_DELIVERIES = [5_000, 10_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    floats = lambda s: [float(x) for x in s.split(",") if x]  # noqa: E731
    p = argparse.ArgumentParser(prog="python -m benchmarks.fanout", description=__doc__.split("\n\n")[0])
    p.add_argument("--viewers", type=ints, default=[1000, 5000, 10000], help="viewer counts W")
    p.add_argument(
        "--rates", type=floats, default=None, help="comments/s steps (default: 5k…2M deliveries/s over W)"
    )
    p.add_argument("--duration", type=float, default=1.0, help="measured seconds per step")
    p.add_argument("--warmup", type=float, default=0.3, help="seconds at each rate before measuring")
    p.add_argument(
        "--targets", type=lambda s: s.split(","), default=list(servers.TARGETS), help="servers to run"
    )
    p.add_argument("--quick", action="store_true", help="tiny run (< 30 s): 200 viewers, two rates")
    p.add_argument(
        "--setup-peer", action="store_true", help="install the pinned peer stack into benchmarks/.venv-peer"
    )
    p.add_argument(
        "--out", type=Path, default=servers.ROOT / "benchmarks" / "results", help="report directory"
    )
    p.add_argument(
        "--no-pin", action="store_true", help="do not pin server and load generator to cores 0 and 1"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.viewers, args.duration, args.warmup = [200], 0.5, 0.2
        args.rates = args.rates or [50, 500]
    unknown = set(args.targets) - set(servers.TARGETS)
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(servers.TARGETS)}")
    return args


def rates_for(args: argparse.Namespace, viewers: int) -> list[float]:
    # At least 2 comments/s: a slower rate leaves a 1 s window without a post to time.
    return args.rates or sorted({max(2.0, round(d / viewers, 2)) for d in DEFAULT_DELIVERIES})


def run_target(
    name: str,
    viewers: int,
    rates: list[float],
    args: argparse.Namespace,
    cores: tuple[int | None, int | None],
) -> dict[str, Any]:
    server = servers.start(name, cores[0])
    result: dict[str, Any] = {"target": name, "viewers": viewers, "steps": [], "memory": None, "error": None}
    try:
        argv = [
            sys.executable,
            "-m",
            "benchmarks.fanout.loadgen",
            "--port",
            str(server.port),
            "--viewers",
            str(viewers),
            "--rates",
            ",".join(str(r) for r in rates),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
        ]
        for pid in server.pids:
            argv += ["--pid", str(pid)]
        env = {**os.environ, "PYTHONPATH": str(servers.ROOT)}
        budget = 90 + len(rates) * (args.warmup + args.duration + 3)
        out = subprocess.run(
            servers.pinned(cores[1], argv),
            capture_output=True,
            env=env,
            cwd=servers.ROOT,
            timeout=budget,
            preexec_fn=servers.raise_nofile,
        )
        for line in out.stdout.decode().splitlines():
            row = json.loads(line)
            kind = row.pop("kind")
            if kind == "memory":
                result["memory"] = row
            elif kind == "step":
                result["steps"].append(row)
            else:
                result["error"] = row["error"]
        if out.returncode and not result["error"]:
            result["error"] = out.stderr.decode()[-500:]
    finally:
        server.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    servers.raise_nofile()
    if args.setup_peer:
        servers.setup_peer()
    cores: tuple[int | None, int | None] = (
        (0, 1) if (os.cpu_count() or 1) >= 2 and not args.no_pin else (None, None)
    )
    started = time.time()
    results = []
    for viewers in args.viewers:
        for name in args.targets:
            res = run_target(name, viewers, rates_for(args, viewers), args, cores)
            results.append(res)
            print(report.progress_line(res), flush=True)
    doc = report.build(results, args, cores, time.time() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fanout.json").write_text(json.dumps(doc, indent=1))
    (args.out / "fanout.md").write_text(report.markdown(doc))
    report.chart(doc, args.out / "fanout.png")
    print(report.summary(doc))
    print(f"wrote {args.out}/fanout.json, fanout.md, fanout.png in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
