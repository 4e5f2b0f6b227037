"""`livecomments load`: the workload model (workload.py) run against a live system through one URL.

W viewers open SSE streams to the URL (the cluster's balancer, so its policy places them), each
on a video drawn by Zipf popularity; comments are posted open-loop at R/s on videos drawn the same
way, for a duration or until stopped. The same run drives the dashboard's "load" button
(dashboard.py). It reuses the strategy benchmark's light SSE client and post.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import click

CONNECT_BATCH = 100  # concurrent connects: below the servers' listen backlog
# Bounds of one run: the viewers are sockets of this process (and two each in the balancer).
LIMITS: dict[str, tuple[float, float]] = {
    "videos": (1, 100_000), "viewers": (0, 5_000), "zipf": (0, 3), "rate": (0.1, 2_000), "duration": (1, 3_600),
}


@dataclass(frozen=True)
class LoadSettings:
    videos: int = 50
    viewers: int = 500
    zipf: float = 1.0
    rate: float = 20.0  # comments/s, all videos together
    duration: float = 60.0  # seconds of posting
    seed: int = 1

    def problem(self) -> str | None:
        """Why these settings cannot run, or None."""
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                return f"{name} must be between {low:g} and {high:g}, not {value:g}"
        return None

    @classmethod
    def from_json(cls, body: Any) -> LoadSettings:
        """Settings from a JSON object; ValueError names what is wrong."""
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        unknown = set(body) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, value in body.items():
            integral = name in ("videos", "viewers", "seed")
            ok = isinstance(value, int) if integral else isinstance(value, int | float)
            if not ok or isinstance(value, bool):
                raise ValueError(f"{name} must be {'an integer' if integral else 'a number'}")
            values[name] = value
        settings = cls(**values)
        problem = settings.problem()
        if problem:
            raise ValueError(problem)
        return settings


@dataclass
class LoadRun:
    """One run; run() returns when the duration is over, cancel its task to stop early."""

    url: str
    settings: LoadSettings
    state: str = "starting"  # starting, connecting, running, draining, done, stopped, failed
    error: str = ""
    viewers_open: int = 0
    p99_ms: float | None = None  # viewers' delivery latency over the last second
    started: float = field(default_factory=time.monotonic)
    posting_since: float = 0.0
    _frames: list[Any] = field(default_factory=list, repr=False)  # the viewers' protocols
    _observed: Any = field(default=None, repr=False)  # the benchmark's Observation: posted, failed_posts
    _latencies: list[float] = field(default_factory=list, repr=False)

    async def run(self) -> None:
        from livecomments.benchmarks.common import raise_nofile
        from livecomments.benchmarks.strategies import _post
        from livecomments.benchmarks.strategies_report import Observation
        from livecomments.benchmarks.workload import Workload

        s = self.settings
        workload = Workload(s.videos, s.viewers, s.rate, s.zipf, s.seed)
        raise_nofile()
        observed = self._observed = Observation()
        transports: list[asyncio.Transport] = []
        ticker = asyncio.create_task(self._tick())
        timeout, connector = aiohttp.ClientTimeout(total=30), aiohttp.TCPConnector(limit=64)
        try:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                self.state = "connecting"
                await self._open_viewers(workload.viewer_videos.tolist(), transports)
                self.state, self.posting_since = "running", time.monotonic()
                pending: set[asyncio.Task[None]] = set()
                try:
                    for i, v in enumerate(workload.posts(int(s.rate * s.duration)).tolist()):
                        await asyncio.sleep(max(0.0, self.posting_since + i / s.rate - time.monotonic()))
                        task = asyncio.create_task(_post(session, self.url, v, observed))  # open loop
                        pending.add(task)
                        task.add_done_callback(pending.discard)
                    await asyncio.gather(*pending)  # the last posts' answers
                finally:  # stopped: the posts in flight give up before the session closes
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
            self.state = "draining"
            await self._drain(int(workload.viewers_per_video[observed.posted].sum()))
            self.state = "done"
        except asyncio.CancelledError:
            self.state = "stopped"
            raise
        except Exception as e:
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"[:300]
            raise
        finally:
            ticker.cancel()
            self._update()
            for transport in transports:
                transport.abort()

    async def _open_viewers(self, videos: list[int], transports: list[asyncio.Transport]) -> None:
        from livecomments.benchmarks.viewers import open_viewer
        from livecomments.benchmarks.workload import video_id

        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        for start in range(0, len(videos), CONNECT_BATCH):
            batch = [open_viewer(host, port, video_id(v), self._latencies) for v in videos[start:start + CONNECT_BATCH]]
            for transport, proto in await asyncio.gather(*batch):
                transports.append(transport)
                self._frames.append(proto)
                proto.sample = True
            async with asyncio.timeout(30):  # every stream answered before posting starts
                await asyncio.gather(*(proto.ready for proto in self._frames[start:]))
            self.viewers_open = len(transports)

    async def _drain(self, expected: int, timeout: float = 5.0) -> None:
        """The frames still in flight after the last post's answer (the servers batch): poll the
        viewers' counts until they add up, bounded (a server may have cut a slow viewer)."""
        deadline = time.monotonic() + timeout
        while self.delivered < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._update()

    def _update(self) -> None:
        window = sorted(self._latencies)
        self._latencies.clear()  # the viewers append to this very list
        if window:
            self.p99_ms = window[min(len(window) - 1, int(len(window) * 0.99))] * 1000

    @property
    def posted(self) -> int:
        return len(self._observed.posted) if self._observed else 0

    @property
    def failed(self) -> int:
        return int(self._observed.failed_posts) if self._observed else 0

    @property
    def delivered(self) -> int:
        return sum(proto.frames for proto in self._frames)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.posting_since if self.posting_since else 0.0

    def progress(self) -> dict[str, Any]:
        return {"state": self.state, "error": self.error, "settings": self.settings.__dict__,
                "elapsed": min(self.elapsed, self.settings.duration), "viewers_open": self.viewers_open,
                "posted": self.posted, "failed": self.failed, "delivered": self.delivered, "p99_ms": self.p99_ms}

    def line(self) -> str:
        s = self.settings
        p99 = f"{self.p99_ms:,.0f} ms" if self.p99_ms is not None else "–"
        return (f"{self.state:<10} {min(self.elapsed, s.duration):4.0f}/{s.duration:.0f} s"
                f"  viewers {self.viewers_open}/{s.viewers}  posted {self.posted:,} ({self.failed:,} failed)"
                f"  delivered {self.delivered:,}  p99 {p99}")


async def _run_with_progress(run: LoadRun) -> None:
    """The run, with its progress line redrawn every second (a new line each time when not a terminal)."""
    end = "\r" if sys.stdout.isatty() else "\n"
    task = asyncio.create_task(run.run())
    try:
        while not (await asyncio.wait({task}, timeout=1.0))[0]:
            click.echo(run.line().ljust(100) + end, nl=False)
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        click.echo(run.line().ljust(100))  # the final state, on a line of its own
    task.result()


@click.command("load")
@click.option("--url", required=True, help="the system's URL: the cluster's balancer (or one `both` server)")
@click.option("--videos", default=LoadSettings.videos, show_default=True, help="live videos V")
@click.option("--viewers", default=LoadSettings.viewers, show_default=True, help="SSE viewers W")
@click.option("--zipf", default=LoadSettings.zipf, show_default=True, help="Zipf exponent of video popularity")
@click.option("--rate", default=LoadSettings.rate, show_default=True, help="comments/s, all videos together")
@click.option("--duration", default=LoadSettings.duration, show_default=True, help="seconds of posting")
@click.option("--seed", default=LoadSettings.seed, show_default=True, help="workload seed")
def load(url: str, videos: int, viewers: int, zipf: float, rate: float, duration: float, seed: int) -> None:
    """Run the workload model (viewers by Zipf popularity, comments at a rate) against URL."""
    settings = LoadSettings(videos, viewers, zipf, rate, duration, seed)
    problem = settings.problem()
    if problem:
        raise click.BadParameter(problem)
    try:
        import numpy  # noqa: F401  # the workload model's
    except ModuleNotFoundError:
        raise click.ClickException("load needs numpy: pip install 'livecomments[bench]'") from None
    run = LoadRun(url.rstrip("/"), settings)
    try:
        asyncio.run(_run_with_progress(run))
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except (OSError, aiohttp.ClientError, TimeoutError, RuntimeError) as e:
        raise click.ClickException(run.error or f"{type(e).__name__}: {e}") from None
