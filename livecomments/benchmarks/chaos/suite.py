"""Driver: each strategy's scenario in turn on one PostgreSQL, then the summary table.

A full run writes it to chaos.md in benchmarks/results/ of the checkout; --quick (fewer viewers,
shorter faults) writes to the scratch folder, so the committed report is always a full run.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from livecomments.benchmarks.chaos import scenario
from livecomments.benchmarks.chaos.check import Summary, details, table
from livecomments.benchmarks.common import raise_nofile
from livecomments.benchmarks.report import run_line
from livecomments.ops.services import PostgresServer

LABELS = [s.label for s in scenario.STRATEGIES]


def report(summaries: list[Summary], settings: scenario.Settings, quick: bool) -> str:
    faults = (
        "kill -9 writer, kill -9 realtime, broker (etcd for the dispatcher) killed and restarted, "
        "broker SIGSTOP/SIGCONT, PostgreSQL stopped and started, PostgreSQL SIGSTOP/SIGCONT, "
        f"{settings.viewers} simultaneous reconnects")
    return "\n".join([
        f"# Fault suite ({'quick' if quick else 'full'} run, `livecomments bench chaos{' --quick' if quick else ''}`)",
        "",
        run_line(quick),
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


async def run(labels: list[str], quick: bool, out: Path, log: Callable[[str], None]) -> tuple[str, bool]:
    """Run the chosen strategies, write out/chaos.md; (the report, whether every strategy passed)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # stop what we started
    settings = scenario.QUICK if quick else scenario.FULL
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="lc-chaos-"))
    pg = await asyncio.to_thread(PostgresServer().start)
    summaries = []
    try:
        for strategy in (s for s in scenario.STRATEGIES if s.label in labels):
            log(f"{strategy.label}:")
            summaries.append(await scenario.run(strategy, settings, pg, workdir / strategy.label, log))
    finally:
        await asyncio.to_thread(pg.stop)
    text = report(summaries, settings, quick)
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.md").write_text(text)
    log(text)
    log(f"wrote {out / 'chaos.md'}; logs in {workdir}")
    return text, all(s.ok for s in summaries)
