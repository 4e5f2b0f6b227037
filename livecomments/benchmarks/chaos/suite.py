"""Driver: each strategy's scenario in turn on one storage server, then the summary table.

On PostgreSQL (the default) a full run writes it to chaos.md in benchmarks/results/ of the
checkout, on DynamoDB (moto, `--storage dynamodb`) to chaos-dynamodb.md; --quick (fewer viewers,
shorter faults) writes to the scratch folder, so the committed reports are always full runs.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from livecomments.benchmarks.chaos import scenario, stores
from livecomments.benchmarks.chaos.check import Summary, details, table
from livecomments.benchmarks.common import raise_nofile
from livecomments.benchmarks.report import command_line, run_line

LABELS = [s.label for s in scenario.STRATEGIES]


def report_name(storage: str) -> str:
    return "chaos.md" if storage == "postgresql" else f"chaos-{storage}.md"


def command(quick: bool, storage: str) -> str:
    return command_line("chaos", quick, storage, default="postgresql")


def report(summaries: list[Summary], settings: scenario.Settings, quick: bool, storage: str = "postgresql") -> str:
    name = "PostgreSQL" if storage == "postgresql" else "DynamoDB (moto)"
    down = ("its endpoint stopped and started (moto keeps its tables in memory: the gate in front of it is "
            "killed, every connection dropped, and started again)" if storage == "dynamodb" else "stopped and started")
    faults = (
        "kill -9 writer, kill -9 realtime, broker (etcd for the dispatcher) killed and restarted, "
        f"broker SIGSTOP/SIGCONT, {name} {down}, {name} SIGSTOP/SIGCONT, "
        f"{settings.viewers} simultaneous reconnects")
    return "\n".join([
        f"# Fault suite ({'quick' if quick else 'full'} run, `{command(quick, storage)}`)",
        "",
        run_line(quick, command(quick, storage)),
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. One writer and two realtime processes per strategy on "
        f"{name}; {settings.viewers} viewers over {settings.videos} videos reconnecting with Last-Event-ID, "
        f"{settings.posters} posters retrying with Idempotency-Key, one viewer that stops reading once the faults "
        f"are over (big comments then posted until the server cuts it); each fault held "
        f"{settings.hold:g} s: {faults}.",
        "Every count but acked, reconnects, RSS and seconds should be 0, and the stalled viewer cut. "
        "A failed start (retried, as a supervisor would) is a process that exited with an error; the run logs why.",
        "",
        table(summaries),
        "",
        details(summaries) or "Every viewer received every stored comment once, in order.",
        "",
    ])


async def run(labels: list[str], quick: bool, out: Path, log: Callable[[str], None],
              storage: str = "postgresql") -> tuple[str, bool]:
    """Run the chosen strategies on `storage` (stores.NAMES), write out/chaos.md (chaos-dynamodb.md);
    (the report, whether every strategy passed)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # stop what we started
    settings = scenario.QUICK if quick else scenario.FULL
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="lc-chaos-"))
    store = stores.start(storage)  # blocks, before anything else runs: from the main thread, moto dies with us
    summaries = []
    try:
        for strategy in (s for s in scenario.STRATEGIES if s.label in labels):
            log(f"{strategy.label}:")
            summaries.append(await scenario.run(strategy, settings, store, workdir / strategy.label, log))
    finally:
        await asyncio.to_thread(store.stop)
    text = report(summaries, settings, quick, storage)
    out.mkdir(parents=True, exist_ok=True)
    (out / report_name(storage)).write_text(text)
    log(text)
    log(f"wrote {out / report_name(storage)}; logs in {workdir}")
    return text, all(s.ok for s in summaries)
