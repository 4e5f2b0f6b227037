"""The strategy benchmark: every broadcast design × load-balancing policy on one local cluster.

Per case: a private redis-server, one writer, K realtime servers (subprocesses), W SSE viewers
routed client-side by the policy (the "direct mode": HashRing as nginx's `hash $video_id
consistent`, rotation for round-robin, the ring with HAProxy's bounded-load rule for bounded),
comments posted at R/s by Zipf popularity. Without the
Redis broker (or with --mode embedded) each case is one `both` process on the memory broker.
A case that cannot start is reported as failed, never a crash of the whole run.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from tqdm import tqdm

from livecomments.benchmarks.common import raise_nofile
from livecomments.benchmarks.stack import Case, Settings, Stack, cases, cluster_mode
from livecomments.benchmarks.strategies_report import Observation, summarise, write_report
from livecomments.benchmarks.viewers import ViewerProtocol, open_viewer
from livecomments.benchmarks.workload import video_id

__all__ = ["Settings", "cluster_mode", "run", "write_report"]
CONNECT_BATCH = 100  # concurrent connects: below the servers' listen backlog


async def _post(session: aiohttp.ClientSession, url: str, v: int, o: Observation) -> None:
    body = {"author": "bench", "text": f"t={time.time():.6f}"}  # the viewers read latency from it
    try:
        async with session.post(f"{url}/v1/videos/{video_id(v)}/comments", json=body) as resp:
            await resp.read()
            if resp.status == 201:
                o.posted.append(v)
                return
    except (TimeoutError, aiohttp.ClientError):
        pass
    o.failed_posts += 1


async def _poster(
    session: aiohttp.ClientSession, url: str, posts: np.ndarray, rate: float, t0: float, o: Observation
) -> None:
    """Open loop: post i is sent at t0 + i/R whether or not earlier ones returned."""
    tasks: set[asyncio.Task[None]] = set()
    for i, v in enumerate(posts.tolist()):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_post(session, url, v, o))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


Viewers = list[tuple[asyncio.Transport, ViewerProtocol]]


async def _open_viewers(
    stack: Stack, routes: np.ndarray, videos: np.ndarray, latencies: list[float]
) -> Viewers:
    out: Viewers = []
    for start in range(0, len(routes), CONNECT_BATCH):
        batch = []
        for j in range(start, min(start + CONNECT_BATCH, len(routes))):
            host, port = stack.realtime[int(routes[j])].rsplit(":", 1)
            batch.append(open_viewer(host, int(port), video_id(int(videos[j])), latencies))
        out += await asyncio.gather(*batch)
    async with asyncio.timeout(30):
        await asyncio.gather(*(proto.ready for _, proto in out))  # joined: subscribed or registered
    return out


async def run_case(case: Case, settings: Settings, workdir: Path) -> dict[str, Any]:
    workload, o = settings.workload(), Observation()
    stack = Stack(case, settings, workdir)
    viewers: Viewers = []
    try:
        stack.start()
        routes = workload.route(case.policy, stack.realtime, settings.balance_factor)
        timeout, connector = aiohttp.ClientTimeout(total=30), aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            viewers = await _open_viewers(stack, routes, workload.viewer_videos, o.latencies)
            posts = workload.posts(int(settings.rate * (settings.warmup + settings.duration)))
            t0 = time.monotonic()
            poster = asyncio.create_task(_poster(session, stack.writer_url, posts, settings.rate, t0, o))
            await _wait(t0 + settings.warmup, poster)
            _sample(viewers, True)
            o.before, o.cpu0, w0 = await stack.scrape(session), stack.cpu(), time.monotonic()
            await _measure(case, settings, poster, w0)
            o.window = time.monotonic() - w0
            o.after, o.cpu1 = await stack.scrape(session), stack.cpu()
            _sample(viewers, False)
            async with asyncio.timeout(60):
                await poster
            o.expected = int(workload.viewers_per_video[np.asarray(o.posted, dtype=np.int64)].sum())
            o.got = await _drain(viewers, o.expected)
            o.disorder = sum(proto.disorder for _, proto in viewers)
            o.final = await stack.scrape(session)
        return summarise(case, settings, stack.realtime, o)
    finally:
        for transport, _ in viewers:
            transport.abort()
        stack.stop()


def _sample(viewers: Viewers, on: bool) -> None:
    for _, proto in viewers:
        proto.sample = on


async def _measure(case: Case, settings: Settings, poster: asyncio.Task[None], w0: float) -> None:
    """The measured window, with a progress bar."""
    bar = tqdm(
        total=round(settings.duration),
        desc=f"{case.label}/{case.policy}",
        unit="s",
        disable=not settings.progress,
        leave=False,
    )
    while (left := w0 + settings.duration - time.monotonic()) > 0:
        await _wait(time.monotonic() + min(1.0, left), poster)
        bar.n = round(time.monotonic() - w0)
        bar.refresh()
    bar.close()


async def _wait(deadline: float, poster: asyncio.Task[None]) -> None:
    """Sleep until deadline, but surface a crashed poster at once."""
    if not poster.done():
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await asyncio.shield(poster)
        except TimeoutError:
            return
    poster.result()  # raises what the poster raised
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def _drain(viewers: Viewers, expected: int, timeout: float = 5.0) -> int:
    """Frames still in flight after the last post: poll the counts until they add up (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        got = sum(proto.frames for _, proto in viewers)
        if got >= expected or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def run(settings: Settings, only: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    raise_nofile()
    results = []
    for case in cases(settings, only):
        with tempfile.TemporaryDirectory(prefix="lc-bench-") as tmp:
            try:
                results.append(await run_case(case, settings, Path(tmp)))
            except Exception as e:  # a strategy that does not start (yet) is a row, not a crash
                results.append(
                    {**asdict(case), "status": "failed", "error": f"{type(e).__name__}: {e}"[:300]}
                )
    return results
