"""What identity costs a post: µs of server CPU per post with and without JWT verification,
and with and without a rate-limit check (in-process, and one Redis round trip), in one run.

    livecomments bench auth-cost [--posts 4000] [--rounds 3] [--concurrency 16] [--quick]

Each configuration is its own `livecomments serve` process (SQLite, group commit), all started
up front; the rounds interleave them so drift (other load, thermal) hits all alike. The figure is
the server process's CPU (utime+stime from /proc) over the posts it took, the median of the
rounds. Anonymous posts come from loopback, which is not limited, so the anonymous
rate-limited configuration trusts 127.0.0.1 as a proxy and sends X-Forwarded-For per worker.
The limits are set high enough never to refuse: what is measured is the check, not a 429.
A client reuses its token, and the server remembers verified tokens until they expire; the
"new token every post" configuration shows the cost of a full verification each time.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import jwt

from livecomments.benchmarks.common import Process, cpu_seconds
from livecomments.benchmarks.report import run_line

SECRET = "benchmark-secret-of-at-least-32-bytes"
NO_LIMIT = ["--rate-limit-per-s", "0"]
HIGH_LIMIT = ["--rate-limit-per-s", "1000000", "--rate-limit-burst", "1000000"]
JWT = ["--auth-jwt-secret", SECRET]


@dataclass
class Setup:
    name: str
    args: list[str]
    token: bool = False
    fresh_tokens: bool = False  # a new token every post: the server cannot use its verified-token memory
    forwarded: bool = False
    process: Process | None = None
    samples: list[float] = field(default_factory=list)  # µs of CPU per post, one per round


def setups(redis_url: str) -> list[Setup]:
    return [
        Setup("open, no limit", NO_LIMIT),
        Setup("open + limit in-process (per address)", [*HIGH_LIMIT, "--trusted-proxies", "127.0.0.1"], forwarded=True),
        Setup("JWT, no limit", [*JWT, *NO_LIMIT], token=True),
        Setup("JWT (a new token every post), no limit", [*JWT, *NO_LIMIT], token=True, fresh_tokens=True),
        Setup("JWT + limit in-process", [*JWT, *HIGH_LIMIT], token=True),
        Setup("JWT + limit in Redis", [*JWT, *HIGH_LIMIT, "--rate-limit-redis", redis_url], token=True),
    ]


def headers_for(setup: Setup, worker: int, post: int = 0) -> dict[str, str]:
    if setup.token:
        claims = {"sub": f"user-{worker}", "name": f"User {worker}", "exp": int(time.time()) + 3600, "jti": str(post)}
        token = jwt.encode(claims, SECRET, algorithm="HS256")
        return {"Authorization": f"Bearer {token}"}
    if setup.forwarded:
        return {"X-Forwarded-For": f"198.51.100.{worker % 250 + 1}"}
    return {}


async def post_many(session: aiohttp.ClientSession, setup: Setup, posts: int, concurrency: int) -> None:
    assert setup.process is not None
    url = f"{setup.process.url}/v1/videos/bench/comments"
    remaining = iter(range(posts))

    async def worker(n: int) -> None:
        headers = headers_for(setup, n)
        for i in remaining:
            if setup.fresh_tokens:
                headers = headers_for(setup, n, i)
            async with session.post(url, json={"text": f"comment {i}", "author": "bench"}, headers=headers) as r:
                await r.read()
                if r.status != 201:
                    raise RuntimeError(f"{setup.name}: POST got {r.status}: {await r.text()}")

    await asyncio.gather(*(worker(n) for n in range(concurrency)))


async def measure(setup: Setup, session: aiohttp.ClientSession, posts: int, concurrency: int) -> float:
    assert setup.process is not None
    before = cpu_seconds(setup.process.pid)
    await post_many(session, setup, posts, concurrency)
    return (cpu_seconds(setup.process.pid) - before) / posts * 1e6


def verify_cost(repeat: int = 20_000) -> float:
    """µs of one HS256 verification in this process, for scale."""
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
    started = time.process_time()
    for _ in range(repeat):
        jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    return (time.process_time() - started) / repeat * 1e6


async def run(posts: int, rounds: int, concurrency: int, workdir: Path) -> list[Setup]:
    redis = Process.redis(workdir)
    all_setups = setups(redis.url)
    try:
        for i, setup in enumerate(all_setups):
            setup.process = Process.serve(
                ["--port", "0", "--storage", f"sqlite:///{workdir}/s{i}.db", "--log-level", "warning", *setup.args],
                workdir / f"s{i}.log",
            )
        for setup in all_setups:
            assert setup.process is not None
            setup.process.listening()
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            for setup in all_setups:  # warm-up: connections, SQLite pages, Lua script loaded
                await post_many(session, setup, min(500, posts), concurrency)
            for _ in range(rounds):
                for setup in all_setups:
                    setup.samples.append(await measure(setup, session, posts, concurrency))
    finally:
        for setup in all_setups:
            if setup.process is not None:
                setup.process.stop()
        redis.stop()
    return all_setups


def report(all_setups: list[Setup], posts: int, rounds: int, concurrency: int) -> str:
    base = statistics.median(all_setups[0].samples)
    over = f"median of {rounds} rounds x {posts} posts" if rounds > 1 else f"1 round of {posts} posts"
    lines = [f"server CPU per post, {over}, {concurrency} concurrent:",
             f"{'configuration':<40} {'µs/post':>9} {'vs open':>9}   {'rounds' if rounds > 1 else 'round'}"]
    for setup in all_setups:
        median = statistics.median(setup.samples)
        rounds_text = " ".join(f"{s:.0f}" for s in setup.samples)
        lines.append(f"{setup.name:<40} {median:>9.1f} {median - base:>+9.1f}   {rounds_text}")
    lines.append(f"one HS256 verification in-process (PyJWT): {verify_cost():.1f} µs")
    return "\n".join(lines)


def measure_all(posts: int, rounds: int, concurrency: int) -> list[Setup]:
    with tempfile.TemporaryDirectory(prefix="lc-auth-cost-") as tmp:
        return asyncio.run(run(posts, rounds, concurrency, Path(tmp)))


def write_report(all_setups: list[Setup], posts: int, rounds: int, concurrency: int, out: Path, quick: bool) -> str:
    text = report(all_setups, posts, rounds, concurrency)
    out.mkdir(parents=True, exist_ok=True)
    (out / "auth_cost.md").write_text("# What identity costs a post (`livecomments bench auth-cost`)\n\n"
                                      + run_line(quick) + "\n\n```\n" + text + "\n```\n")
    return f"{text}\nwrote {out}/auth_cost.md"
