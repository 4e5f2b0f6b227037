"""The write benchmark: 64 concurrent posters against one writer process on SQLite.

One hot video (every post contends for the same per-video seq) vs 1,000 videos, with group
commit on (one transaction and one fsync per batch) and off (one per comment). The writer is a
`both` process on the memory broker: publishing to no subscriber costs nothing, so what is
measured is the HTTP edge plus storage.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import report
from benchmarks.common import Process, cpu_seconds, parse_metrics, percentiles

SCENARIOS = [
    ("hot video", 1, True),
    ("hot video", 1, False),
    ("1,000 videos", 1000, True),
    ("1,000 videos", 1000, False),
]


async def _posters(url: str, posters: int, posts: int, videos: int) -> tuple[list[float], int, float, float]:
    latencies: list[float] = []
    counter = itertools.count()
    failures = 0

    async def poster(session: aiohttp.ClientSession, limit: int) -> None:
        nonlocal failures
        while (i := next(counter)) < limit:
            t = time.perf_counter()
            async with session.post(
                f"{url}/v1/videos/w{i % videos}/comments", json={"author": "bench", "text": f"comment {i}"}
            ) as resp:
                await resp.read()
                if resp.status != 201:
                    failures += 1
            latencies.append(time.perf_counter() - t)

    async def stored(session: aiohttp.ClientSession) -> float:
        async with session.get(f"{url}/metrics") as resp:
            return parse_metrics(await resp.text()).get("livecomments_comments_stored_total", 0.0)

    connector = aiohttp.TCPConnector(limit=posters)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(poster(session, 2 * posters) for _ in range(posters)))  # open the connections
        latencies.clear()
        counter, failures, before = itertools.count(), 0, await stored(session)
        started = time.perf_counter()
        await asyncio.gather(*(poster(session, posts) for _ in range(posters)))
        elapsed = time.perf_counter() - started
        return latencies, failures, elapsed, await stored(session) - before


async def run_one(
    name: str, videos: int, group_commit: bool, posters: int, posts: int, workdir: Path
) -> dict[str, Any]:
    flag = "--group-commit" if group_commit else "--no-group-commit"
    server = Process.serve(
        [
            "--role",
            "both",
            "--storage",
            f"sqlite:///{workdir}/w.db",
            "--port",
            "0",
            "--log-level",
            "warning",
            flag,
        ],
        workdir / "writer.log",
    ).listening()
    try:
        cpu0, client0 = cpu_seconds(server.pid), time.process_time()
        latencies, failures, elapsed, stored = await _posters(server.url, posters, posts, videos)
        cpu, client_cpu = cpu_seconds(server.pid) - cpu0, time.process_time() - client0
    finally:
        server.stop()
    p50, p99, worst = percentiles(latencies)
    return {
        "scenario": name,
        "videos": videos,
        "group_commit": group_commit,
        "posts": len(latencies),
        "failures": failures,
        "seconds": elapsed,
        "stored_per_s": stored / elapsed,
        "p50_ms": p50 * 1e3,
        "p99_ms": p99 * 1e3,
        "max_ms": worst * 1e3,
        "writer_cpu_s": cpu,
        "client_cpu_s": client_cpu,
    }


async def run(posters: int, posts: int) -> list[dict[str, Any]]:
    results = []
    for name, videos, group in SCENARIOS:
        with tempfile.TemporaryDirectory(prefix="lc-write-") as tmp:
            results.append(await run_one(name, videos, group, posters, posts, Path(tmp)))
    return results


def write_report(results: list[dict[str, Any]], posters: int, posts: int, outdir: Path) -> str:
    rows = [
        [
            r["scenario"],
            "on" if r["group_commit"] else "off",
            f"{r['stored_per_s']:,.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['max_ms']:.1f}",
            r["failures"],
            f"{r['writer_cpu_s']:.2f}",
            f"{r['client_cpu_s']:.2f}",
        ]
        for r in results
    ]
    head = [
        "posts to",
        "group commit",
        "stored/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "failed",
        "writer CPU s",
        "client CPU s",
    ]
    text = "\n".join(
        [
            "# Write benchmark",
            "",
            f"Machine: {report.machine()}. {posters} concurrent posters, {posts:,} posts per row, one writer "
            "process (`--role both`, memory broker, SQLite WAL, synchronous=FULL). "
            "Aim: ≥ 5,000 stored/s, p99 < 50 ms.",
            "",
            report.table(head, rows),
            "",
            "The load generator is one Python process on the same 2 cores: compare its CPU with the writer's "
            "before reading a ceiling as the writer's.",
            "",
        ]
    )
    report.write(outdir, "write", {"machine": report.machine(), "posters": posters, "results": results}, text)
    report.bars(
        outdir / "write.png",
        "Write benchmark",
        [f"{r['scenario']}\ngroup {'on' if r['group_commit'] else 'off'}" for r in results],
        [("stored/s", [r["stored_per_s"] for r in results]), ("p99 ms", [r["p99_ms"] for r in results])],
    )
    return text
