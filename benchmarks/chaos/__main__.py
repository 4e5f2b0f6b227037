"""Driver: each strategy's scenario in turn, then the summary table.

A full run writes it to benchmarks/results/chaos.md; --quick (fewer viewers, shorter faults)
writes to a scratch file outside the tree, so the committed report is always a full run.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.chaos import scenario
from benchmarks.chaos.check import Summary, details, table
from benchmarks.common import RESULTS, raise_nofile
from tests.fixtures.postgres import PostgresServer

SCRATCH = Path(tempfile.gettempdir()) / "livecomments-chaos"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    labels = [s.label for s in scenario.STRATEGIES]
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200 viewers, 1 s faults; report to a scratch file")
    p.add_argument("--out", type=Path, default=None,
                   help="report file (default: benchmarks/results/chaos.md, or a temp file with --quick)")
    p.add_argument("--only", type=lambda s: s.split(","), default=labels, help=f"of {', '.join(labels)}")
    args = p.parse_args(argv)
    unknown = set(args.only) - set(labels)
    if unknown:
        p.error(f"unknown strategies {sorted(unknown)}; choose from {', '.join(labels)}")
    return args


def report(summaries: list[Summary], settings: scenario.Settings, quick: bool) -> str:
    faults = (
        "kill -9 writer, kill -9 realtime, broker (etcd for the dispatcher) killed and restarted, "
        "broker SIGSTOP/SIGCONT, PostgreSQL stopped and started, PostgreSQL SIGSTOP/SIGCONT, "
        f"{settings.viewers} simultaneous reconnects")
    return "\n".join([
        f"# Fault suite ({'quick' if quick else 'full'} run, `python -m benchmarks.chaos{' --quick' if quick else ''}`)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. One writer and two realtime processes per strategy on "
        f"PostgreSQL; {settings.viewers} viewers over {settings.videos} videos reconnecting with Last-Event-ID, "
        f"{settings.posters} posters retrying with Idempotency-Key, one stalled viewer; each fault held "
        f"{settings.hold:g} s: {faults}.",
        "Every count but acked, reconnects, RSS and seconds should be 0, and the stalled viewer cut. "
        "A failed start (retried, as a supervisor would) is a process that exited with an error; the run logs why.",
        "",
        table(summaries),
        "",
        details(summaries) or "Every viewer received every stored comment once, in order.",
        "",
    ])


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # stop what we started
    settings = scenario.QUICK if args.quick else scenario.FULL
    raise_nofile()
    out = args.out or (SCRATCH if args.quick else RESULTS) / "chaos.md"
    workdir = Path(tempfile.mkdtemp(prefix="lc-chaos-"))
    pg = await asyncio.to_thread(PostgresServer().start)
    summaries = []
    try:
        for strategy in (s for s in scenario.STRATEGIES if s.label in args.only):
            print(f"{strategy.label}:", flush=True)
            summaries.append(await scenario.run(strategy, settings, pg, workdir / strategy.label,
                                                lambda line: print(line, flush=True)))
    finally:
        await asyncio.to_thread(pg.stop)
    text = report(summaries, settings, args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}; logs in {workdir}")
    return 0 if all(s.ok for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
