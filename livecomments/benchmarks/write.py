"""The write benchmark: 64 concurrent posters against one writer process, on SQLite and on
DynamoDB (a local moto server).

One hot video (every post contends for the same per-video seq) vs 1,000 videos, with group
commit on (one transaction and one fsync per batch; on DynamoDB one round of conditional puts)
and off (one per comment). The writer is a `both` process on the memory broker: publishing to no
subscriber costs nothing, so what is measured is the HTTP edge plus storage.

The DynamoDB rows run on moto's server started here (ops/dynamo_server.py): an in-memory emulator
on the same cores, so they show our code's cost plus the emulator's (its CPU is reported), not AWS's.

CPU per stored post against a bare aiohttp handler: write_cpu.py.

`python -m livecomments.benchmarks.write --storage postgresql://USER@HOST:PORT/postgres --writers 1,2`
compares one writer with two writer processes on one database (posters split between them,
cycling over a few videos: the case that deadlocked); it prints the figures and writes nothing
under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from livecomments.benchmarks import report, write_cpu
from livecomments.benchmarks.common import Process, cpu_seconds, parse_metrics, percentiles
from livecomments.ops.dynamo_server import DynamoServer
from livecomments.ops.services import ServiceUnavailable

SCENARIOS = [
    ("hot video", 1, True),
    ("hot video", 1, False),
    ("1,000 videos", 1000, True),
    ("1,000 videos", 1000, False),
]
STORES = ("sqlite", "dynamodb")
NAMES = {"sqlite": "SQLite", "dynamodb": "DynamoDB (moto)"}
# moto stores tens of posts a second: a DynamoDB row has at most this many posters and posts. 64
# posters on a hot video with group commit off race for each seq: posts waited past a minute.
DYNAMO_POSTERS = 16
DYNAMO_POSTS = 400


async def _posters(urls: list[str], posters: int, posts: int, videos: int) -> tuple[list[float], int, float, float]:
    """Posters split evenly over the writers at `urls`; returns latencies, failures, seconds, stored."""
    latencies: list[float] = []
    counter = itertools.count()
    failures = 0

    async def poster(session: aiohttp.ClientSession, url: str, limit: int) -> None:
        nonlocal failures
        while (i := next(counter)) < limit:
            t = time.perf_counter()
            try:
                async with session.post(
                    f"{url}/v1/videos/w{i % videos}/comments", json={"author": "bench", "text": f"comment {i}"}
                ) as resp:
                    await resp.read()
                    if resp.status != 201:
                        failures += 1
            except (aiohttp.ClientError, TimeoutError):  # a post not answered within the session's timeout
                failures += 1
            latencies.append(time.perf_counter() - t)

    async def stored(session: aiohttp.ClientSession) -> float:
        total = 0.0
        for url in urls:
            async with session.get(f"{url}/metrics") as resp:
                total += parse_metrics(await resp.text()).get("livecomments_comments_stored_total", 0.0)
        return total

    connector = aiohttp.TCPConnector(limit=posters)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        # open the connections
        await asyncio.gather(*(poster(session, urls[n % len(urls)], 2 * posters) for n in range(posters)))
        latencies.clear()
        counter, failures, before = itertools.count(), 0, await stored(session)
        started = time.perf_counter()
        await asyncio.gather(*(poster(session, urls[n % len(urls)], posts) for n in range(posters)))
        elapsed = time.perf_counter() - started
        return latencies, failures, elapsed, await stored(session) - before


async def run_one(
    name: str, videos: int, group_commit: bool, posters: int, posts: int, workdir: Path,
    storage: str = "", store_pid: int | None = None,
) -> dict[str, Any]:
    """One row; `storage` defaults to a SQLite file in `workdir`; `store_pid` is a storage server
    whose CPU counts too."""
    flag = "--group-commit" if group_commit else "--no-group-commit"
    server = Process.serve(
        [
            "--role",
            "both",
            "--storage",
            storage or f"sqlite:///{workdir}/w.db",
            "--port",
            "0",
            "--log-level",
            "warning",
            flag,
        ],
        workdir / "writer.log",
    ).listening()
    try:
        store0 = cpu_seconds(store_pid) if store_pid is not None else 0.0
        cpu0, client0 = cpu_seconds(server.pid), time.process_time()
        latencies, failures, elapsed, stored = await _posters([server.url], posters, posts, videos)
        cpu, client_cpu = cpu_seconds(server.pid) - cpu0, time.process_time() - client0
        store_cpu = cpu_seconds(store_pid) - store0 if store_pid is not None else None
    finally:
        server.stop()
    p50, p99, worst = percentiles(latencies)
    return {
        "store": "sqlite" if not storage else storage.split(":", 1)[0],
        "scenario": name,
        "videos": videos,
        "group_commit": group_commit,
        "posters": posters,
        "posts": len(latencies),
        "failures": failures,
        "seconds": elapsed,
        "stored_per_s": stored / elapsed,
        "p50_ms": p50 * 1e3,
        "p99_ms": p99 * 1e3,
        "max_ms": worst * 1e3,
        "writer_cpu_s": cpu,
        "client_cpu_s": client_cpu,
        "store_cpu_s": store_cpu,
    }


async def run(posters: int, posts: int, stores: Sequence[str] = STORES, quick: bool = False) -> dict[str, Any]:
    """Every scenario on every store asked for; a store that cannot run here (moto not
    installed) is a note in the report, not a failure. Then CPU per post against the bare handler."""
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    cpu = await write_cpu.run(_posters, max(posts, 2000), 1 if quick else 3) if "sqlite" in stores else []
    for store in stores:
        if store == "sqlite":
            for name, videos, group in SCENARIOS:
                with tempfile.TemporaryDirectory(prefix="lc-write-") as tmp:
                    results.append(await run_one(name, videos, group, posters, posts, Path(tmp)))
            continue
        try:
            results += await run_dynamodb(min(posters, DYNAMO_POSTERS), min(posts, 60 if quick else DYNAMO_POSTS),
                                          quick)
        except ServiceUnavailable as e:
            skipped.append(f"{NAMES[store]} skipped: {e}")
    return {"posters": posters, "results": results, "skipped": skipped, "cpu": cpu}


async def run_dynamodb(posters: int, posts: int, quick: bool) -> list[dict[str, Any]]:
    """The scenarios (quick: group commit on only) on a moto server of their own, fresh tables per row."""
    server = DynamoServer().start()  # from the main thread, so it dies with us; ~1 s before anything is timed
    try:
        assert server.proc is not None
        results = []
        for name, videos, group in [s for s in SCENARIOS if s[2] or not quick]:
            with tempfile.TemporaryDirectory(prefix="lc-write-") as tmp:
                results.append(await run_one(name, videos, group, posters, posts, Path(tmp), server.url(),
                                             server.proc.pid))
        return results
    finally:
        await asyncio.to_thread(server.stop)


def write_report(data: dict[str, Any], posts: int, outdir: Path, quick: bool, command: str) -> str:
    results, posters = data["results"], data["posters"]
    rows = [
        [
            NAMES[r["store"]],
            r["scenario"],
            "on" if r["group_commit"] else "off",
            r["posters"],
            f"{r['posts']:,}",
            f"{r['stored_per_s']:,.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['max_ms']:.1f}",
            r["failures"],
            f"{r['writer_cpu_s']:.2f}",
            "" if r["store_cpu_s"] is None else f"{r['store_cpu_s']:.2f}",
            f"{r['client_cpu_s']:.2f}",
        ]
        for r in results
    ]
    head = ["store", "posts to", "group commit", "posters", "posts", "stored/s", "p50 ms", "p99 ms", "max ms", "failed",
            "writer CPU s", "moto CPU s", "client CPU s"]
    text = "\n".join(
        [
            "# Write benchmark",
            "",
            report.run_line(quick, command),
            "",
            f"{posters} concurrent posters, {posts:,} posts per row (DynamoDB: at most {DYNAMO_POSTERS} posters and "
            f"{DYNAMO_POSTS:,} posts), one writer process (`--role both`, memory broker). SQLite: WAL, synchronous=FULL. "
            "Aim on SQLite: ≥ 5,000 stored/s, p99 < 50 ms.",
            *[f"\n{note}" for note in data["skipped"]],
            "",
            report.table(head, rows),
            "",
            "The DynamoDB rows run on moto, an in-memory emulator in Python on these same cores (its CPU is the "
            "moto column): the figure is our code's cost plus the emulator's, not AWS's, which adds a network "
            "round trip per request and replicates every write. What carries over is the shape: on a hot video "
            "every post claims the next seq with a conditional put, one after the other.",
            "",
            "The load generator is one Python process on the same 2 cores: compare its CPU with the writer's "
            "before reading a ceiling as the writer's.",
            "",
            *write_cpu.section(data["cpu"]),
        ]
    )
    report.write(outdir, "write", data, text, quick)
    report.bars(
        outdir / "write.png",
        f"Write benchmark ({report.run_mode(quick)} run)",
        [f"{NAMES[r['store']]}\n{r['scenario']}\ngroup {'on' if r['group_commit'] else 'off'}" for r in results],
        [("stored/s", [r["stored_per_s"] for r in results]), ("p99 ms", [r["p99_ms"] for r in results])],
    )
    return text


async def run_writers(storage: str, writers: int, posters: int, posts: int, videos: int, workdir: Path) -> dict[str, Any]:
    """`writers` writer processes on one database, `posters` clients split between them."""
    servers = [
        Process.serve(["--role", "both", "--storage", storage, "--port", "0", "--log-level", "warning"],
                      workdir / f"writer-{n}.log")
        for n in range(writers)
    ]
    try:
        urls = [server.listening().url for server in servers]
        latencies, failures, elapsed, stored = await _posters(urls, posters, posts, videos)
    finally:
        for server in servers:
            server.stop()
    p50, p99, worst = percentiles(latencies)
    return {"writers": writers, "posts": len(latencies), "failures": failures, "stored_per_s": stored / elapsed,
            "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "max_ms": worst * 1e3}


async def compare_writers(storage: str, counts: list[int], posters: int, posts: int, videos: int) -> list[dict[str, Any]]:
    """One fresh database per row: a new SQLite file (`sqlite`), or a new database on the
    PostgreSQL server at `storage` (a postgresql:// URL), dropped afterwards."""
    results = []
    for writers in counts:
        with tempfile.TemporaryDirectory(prefix="lc-write-") as tmp:
            if storage == "sqlite":
                results.append(await run_writers(f"sqlite:///{tmp}/w.db", writers, posters, posts, videos, Path(tmp)))
                continue
            async with _fresh_postgres_database(storage) as url:
                results.append(await run_writers(url, writers, posters, posts, videos, Path(tmp)))
    return results


@contextlib.asynccontextmanager
async def _fresh_postgres_database(server_url: str) -> AsyncIterator[str]:
    import asyncpg  # type: ignore[import-untyped]

    name = f"lc_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
        finally:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one writer vs several on one database; prints, writes no report")
    parser.add_argument("--storage", default="sqlite",
                        help="sqlite, or the URL of a PostgreSQL server (postgresql://USER@HOST:PORT/DB) to create "
                        "a fresh database on per row")
    parser.add_argument("--writers", default="1,2", help="writer process counts to compare, comma-separated")
    parser.add_argument("--posters", type=int, default=64, help="concurrent posting clients in all")
    parser.add_argument("--posts", type=int, default=4000, help="posts per row")
    parser.add_argument("--videos", type=int, default=8, help="videos the posts cycle over")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.writers.split(",")]
    results = asyncio.run(compare_writers(args.storage, counts, args.posters, args.posts, args.videos))
    head = ["writers", "stored/s", "p50 ms", "p99 ms", "max ms", "failed"]
    rows = [[r["writers"], f"{r['stored_per_s']:,.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['max_ms']:.1f}",
             r["failures"]] for r in results]
    where = args.storage.split("://")[0]
    print(f"{where}, {args.posters} posters over {args.videos} videos, {args.posts:,} posts per row")
    print(report.table(head, rows))


if __name__ == "__main__":
    main()
