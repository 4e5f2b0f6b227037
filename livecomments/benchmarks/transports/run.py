"""Driver: the same server and the same load, once with SSE viewers and once with WebSocket
viewers, and the fan-out benchmark's bare-uvloop floor with SSE viewers; then the post round trip.

For each viewer count a fresh server (fanout/servers.py) starts pinned to core 0 and a load
generator (loadgen.py) pinned to core 1 measures its RSS before and after the viewers connect
(bytes per idle connection), then posts at one fixed comment rate and measures the server's CPU
per delivery, the post → viewer latency and its own CPU (a saturated load generator is flagged,
not blamed on the server). Last, one more server answers sequential posts over a keep-alive HTTP
connection and over an open WebSocket, alternately. Rate limits are off in every server
(servers.serve_argv): the default, 1 post/s with a burst of 5 per address, would measure the limit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livecomments.benchmarks.common import raise_nofile
from livecomments.benchmarks.fanout import report as fanout_report
from livecomments.benchmarks.fanout import servers
from livecomments.benchmarks.fanout.run import add_row, loadgen_rows
from livecomments.benchmarks.transports import report

LOADGEN = [sys.executable, "-m", "livecomments.benchmarks.transports.loadgen"]
# The livecomments targets of the fan-out benchmark, and the floor that does the same batching.
SERVERS = {"livecomments-immediate": "floor-immediate", "livecomments-batch20": "floor-tick20",
           "livecomments-adaptive": "floor-tick20"}
MAX_CONNECTIONS = "LIVECOMMENTS_MAX_CONNECTIONS"


@dataclass
class Settings:
    out: Path
    viewers: list[int] = field(default_factory=lambda: [1000, 5000, 10000])
    rate: float = 10.0  # comments/s, the same at every viewer count
    duration: float = 2.0  # measured seconds of the step
    warmup: float = 0.5  # seconds at the rate before measuring
    round_trips: int = 1000  # sequential posts per transport
    server: str = "livecomments-immediate"  # one write per comment: the transports' own cost per delivery
    quick: bool = False
    pin: bool = True  # server on core 0, load generator on core 1
    command: str = "livecomments bench transports"

    def rows(self) -> list[tuple[str, str, str]]:
        """(label, server target, viewers' transport) measured at each viewer count."""
        return [("sse", self.server, "sse"), ("websocket", self.server, "ws"), ("floor", SERVERS[self.server], "sse")]


def command_line(quick: bool) -> str:
    """What ran, for the report: this command's own arguments (under `bench all`, only --quick)."""
    mine = sys.argv[1:3] == ["bench", "transports"]
    return " ".join(["livecomments bench transports", *(sys.argv[3:] if mine else ["--quick"] if quick else [])])


def cores_for(settings: Settings) -> tuple[int | None, int | None]:
    """(server core, load generator core): 0 and 1 when pinning and there are two cores, else unpinned."""
    return (0, 1) if (os.cpu_count() or 1) >= 2 and settings.pin else (None, None)


@contextmanager
def uncapped_connections() -> Iterator[None]:
    """Servers started meanwhile take `max_connections 0` (as many as their open files allow, at least the
    default 4,096) from the environment: a WebSocket stays counted as a connection as long as it is open
    (edge/server.py), so the default cap would turn WebSocket viewers away past 4,096; SSE streams leave
    the count when they go live. Restored after: `bench all` runs other benchmarks in this process."""
    before = os.environ.get(MAX_CONNECTIONS)
    os.environ[MAX_CONNECTIONS] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[MAX_CONNECTIONS]
        else:
            os.environ[MAX_CONNECTIONS] = before


def measure(label: str, target: str, transport: str, viewers: int, settings: Settings,
            cores: tuple[int | None, int | None]) -> dict[str, Any]:
    """One fresh server, `viewers` viewers over `transport`: idle memory, then one step at the rate."""
    result: dict[str, Any] = {"target": label, "server": target, "transport": transport, "viewers": viewers,
                              "steps": [], "memory": None, "error": None}
    try:
        with uncapped_connections():
            server = servers.start(target, cores[0], viewers)
    except (RuntimeError, TimeoutError, OSError) as e:  # a row that says so; the others still run
        result["error"] = f"did not start: {e}"
        return result
    try:
        argv = ["--transport", transport, "--port", str(server.port), *(f"--pid={pid}" for pid in server.pids),
                "--viewers", str(viewers), "--rates", str(settings.rate), "--duration", str(settings.duration),
                "--warmup", str(settings.warmup)]
        for row in loadgen_rows([*LOADGEN, *argv], cores[1], 120 + viewers / 50 + settings.warmup + settings.duration):
            add_row(result, row)
    finally:
        server.stop()
    refused = {k: n for k, n in (result["memory"] or {}).get("served_by", {}).items() if k.startswith("refused")}
    if refused:  # the load generator then timed out waiting for them: say why instead
        result["refused"] = sum(refused.values())
        result["error"] = f"{result['refused']:,} of {viewers:,} viewers {', '.join(refused)}"
    return result


def round_trips(settings: Settings, cores: tuple[int | None, int | None]) -> dict[str, Any]:
    """Sequential posts over HTTP and over the WebSocket against one fresh server."""
    try:
        with uncapped_connections():
            server = servers.start(settings.server, cores[0], 10)
    except (RuntimeError, TimeoutError, OSError) as e:
        return {"error": f"did not start: {e}"}
    try:
        budget = 60 + settings.round_trips * 0.1  # 50 ms a post is far past any answer on a working server
        rows = loadgen_rows([*LOADGEN, "--round-trips", str(settings.round_trips), "--port", str(server.port)], cores[1], budget)
    finally:
        server.stop()
    row = rows[-1] if rows else {"kind": "error", "error": "the load generator printed nothing"}
    return {"error": row.pop("error", None), **row}


def run(settings: Settings, echo: Callable[[str], None] = print) -> dict[str, Any]:
    raise_nofile()
    cores = cores_for(settings)
    started = time.time()
    results = []
    for viewers in settings.viewers:
        for label, target, transport in settings.rows():
            result = measure(label, target, transport, viewers, settings, cores)
            results.append(result)
            echo(fanout_report.progress_line(result))
    posts = round_trips(settings, cores)
    echo(report.round_trip_line(posts))
    doc = report.build(results, posts, settings, cores, time.time() - started)
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "transports.json").write_text(json.dumps(doc, indent=1))
    (settings.out / "transports.md").write_text(report.markdown(doc))
    report.chart(doc, settings.out / "transports.png")
    echo(report.summary(doc))
    echo(f"wrote {settings.out}/transports.json, transports.md, transports.png in {time.time() - started:.0f} s")
    return doc
