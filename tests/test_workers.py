"""`serve --workers N`: N processes on one port (SO_REUSEPORT) under one supervisor, over a real Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import history, post
from tests.sse import SSEReader, open_stream


def children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except FileNotFoundError:
        return set()


def worker_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def until(predicate: Any, timeout: float = 10.0, what: str = "") -> None:
    """Poll another process's state (there is no event to wait for across processes), bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


SECRET = "s3cret-" * 5  # the dispatcher's: through the environment, as the README says, never a flag


def workers_args(strategy: str, redis_url: str, tmp_path: Path, workers: int = 2) -> list[str]:
    args = ["--workers", str(workers), "--strategy", strategy, "--storage", f"sqlite:///{tmp_path}/w.db"]
    if strategy == "dispatcher":
        return [*args, "--registry", redis_url]
    return [*args, "--broker", redis_url]


async def streams_on_every_worker(session: aiohttp.ClientSession, url: str, video: str,
                                  workers: int = 2) -> dict[str, list[SSEReader]]:
    """Open streams (each a new connection, so the kernel hashes each anew) until every worker has some."""
    by_worker: dict[str, list[SSEReader]] = {}
    for _ in range(60):  # 2 workers: the chance that 60 connections miss one is 2^-59
        stream = await open_stream(session, url, video)
        by_worker.setdefault(stream.resp.headers["X-Served-By"], []).append(stream)
        if len(by_worker) == workers and min(map(len, by_worker.values())) >= 2:
            break
    assert len(by_worker) == workers, sorted(by_worker)
    return by_worker


@pytest.mark.parametrize("strategy", ["broadcast", "partitioned", "dispatcher"])
async def test_viewers_on_every_worker_see_every_comment_once_in_order(strategy, spawn, redis_server, session,
                                                                      tmp_path):
    server = spawn(*workers_args(strategy, redis_server.url, tmp_path), env={"LIVECOMMENTS_CLUSTER_SECRET": SECRET})
    port = server.url.rsplit(":", 1)[1]
    shown = [_cmdline(Path(f"/proc/{pid}")) for pid in {server.proc.pid, *children(server.proc.pid)}]
    assert len(shown) == 3 and not [c for c in shown if SECRET.encode() in c]  # the workers get it in memory
    by_worker = await streams_on_every_worker(session, server.url, "hot")
    assert set(by_worker) == {f"127.0.0.1:{port}/w1", f"127.0.0.1:{port}/w2"}
    # Posts land on either worker too: each post is a fresh connection.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as posting:
        for i in range(10):
            await post(posting, server.url, "hot", text=f"c{i}")
    for streams in by_worker.values():
        for stream in streams:
            assert [c["seq"] for c in await stream.comments(10)] == list(range(1, 11))


async def test_a_cursor_from_one_worker_pages_on_the_other(spawn, redis_server, tmp_path):
    server = spawn(*workers_args("broadcast", redis_server.url, tmp_path))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        for i in range(5):
            await post(fresh, server.url, "v", text=f"c{i}")
        first = await history(fresh, server.url, "v", limit=2)
        served = set()
        for _ in range(20):  # every page request a new connection: both workers answer some
            async with fresh.get(f"{server.url}/v1/videos/v/comments", params={"limit": 2, "before": first["next"]}) as r:
                assert r.status == 200, await r.text()
                served.add(r.headers["X-Served-By"])
                assert [c["seq"] for c in (await r.json())["comments"]] == [3, 2]
    assert len(served) == 2


async def test_metrics_on_the_shared_port_answer_for_every_worker(spawn, redis_server, session, tmp_path):
    server = spawn(*workers_args("broadcast", redis_server.url, tmp_path))
    by_worker = await streams_on_every_worker(session, server.url, "v")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        for _ in range(4):  # whichever worker the scrape reaches
            async with fresh.get(f"{server.url}/metrics") as r:
                text = await r.text()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            open_streams = {s.labels["worker"]: s.value for s in families["livecomments_connections"].samples}
            assert open_streams == {name.rsplit("/w", 1)[1]: len(streams) for name, streams in by_worker.items()}
            assert {s.labels["worker"] for s in families["process_cpu_seconds"].samples} == {"1", "2"}


async def test_a_killed_worker_is_replaced_and_the_other_keeps_its_viewers(spawn, redis_server, session, tmp_path):
    server = spawn(*workers_args("broadcast", redis_server.url, tmp_path))
    supervisor = server.proc.pid
    by_worker = await streams_on_every_worker(session, server.url, "v")
    names = {worker_name(pid): pid for pid in children(supervisor)}
    assert set(names) == {"lc-worker-1", "lc-worker-2"}  # what ps and top show
    os.kill(names["lc-worker-1"], signal.SIGKILL)
    for stream in by_worker[f"{server.url.removeprefix('http://')}/w1"]:
        with pytest.raises((EOFError, aiohttp.ClientPayloadError)):  # its viewers are cut (EventSource reconnects)
            await stream.next_comment(5)
    await until(lambda: "lc-worker-1" in {worker_name(pid) for pid in children(supervisor) - {names["lc-worker-1"]}},
                15, "the replacement of worker 1")
    await post(session, server.url, "v", text="after")
    # The other worker's viewers were never cut: they get the comment posted after the crash.
    for stream in by_worker[f"{server.url.removeprefix('http://')}/w2"]:
        assert (await stream.next_comment(5))["text"] == "after"
    assert names["lc-worker-2"] in children(supervisor)  # worker 2 itself was left alone
    await streams_on_every_worker(session, server.url, "v2")  # and the replacement serves new viewers


async def test_a_hung_worker_is_killed_and_replaced_and_new_connections_are_all_answered(spawn, redis_server,
                                                                                        tmp_path):
    server = spawn(*workers_args("broadcast", redis_server.url, tmp_path, workers=3))
    supervisor = server.proc.pid
    names = {worker_name(pid): pid for pid in children(supervisor)}
    assert set(names) == {"lc-worker-1", "lc-worker-2", "lc-worker-3"}
    hung = names["lc-worker-2"]
    os.kill(hung, signal.SIGSTOP)  # alive, holding its socket, answering nothing
    try:
        # HUNG_TIMEOUT (5 s) + the supervisor's 0.5 s wake-up + the restart delay (1 s), with room for a loaded machine
        await until(lambda: "lc-worker-2" in {worker_name(pid) for pid in children(supervisor) - {hung}},
                    20, "the supervisor to replace the hung worker 2")
        assert not alive(hung)  # killed, and reaped
    finally:
        if alive(hung):
            os.kill(hung, signal.SIGKILL)  # a stopped process would outlive the test (it ignores the parent-death SIGTERM)
    assert {worker_name(pid) for pid in children(supervisor)} == {"lc-worker-1", "lc-worker-2", "lc-worker-3"}
    assert {names["lc-worker-1"], names["lc-worker-3"]} <= children(supervisor)  # the others were left alone
    lines = [line for line in server.log_path.read_text().splitlines() if f"(pid {hung})" in line]
    assert len(lines) == 1 and "worker 2" in lines[0] and "did not answer" in lines[0], lines
    # Every new connection is answered, the ones the kernel hands to worker 2's socket by its replacement.
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), timeout=timeout) as fresh:
        async def healthz() -> str:
            async with fresh.get(f"{server.url}/healthz") as r:
                assert r.status == 200
                return r.headers["X-Served-By"]

        served = await asyncio.gather(*(healthz() for _ in range(60)))
    assert {name.rsplit("/", 1)[1] for name in served} == {"w1", "w2", "w3"}  # all missed one by chance: 3 × (2/3)^60


async def test_sigterm_stops_every_worker_and_sigkill_of_the_supervisor_takes_them_along(spawn, redis_server,
                                                                                         tmp_path):
    clean = spawn(*workers_args("broadcast", redis_server.url, tmp_path, workers=3))
    workers = children(clean.proc.pid)
    assert len(workers) == 3
    assert clean.stop(signal.SIGTERM) == 0
    assert not any(alive(pid) for pid in workers)

    crashed = spawn(*workers_args("broadcast", redis_server.url, tmp_path))
    orphans = children(crashed.proc.pid)
    crashed.kill()  # SIGKILL: no chance to stop them; the parent-death signal does
    await until(lambda: not any(alive(pid) for pid in orphans), 15, "orphaned workers to exit")


def test_workers_that_cannot_start_give_one_line_and_leave_nothing_running(redis_server, tmp_path):
    args = workers_args("broadcast", redis_server.url, tmp_path)
    (tmp_path / "a-file").write_text("")
    args[args.index("--storage") + 1] = f"sqlite:///{tmp_path}/a-file/x.db"  # its folder cannot be made
    proc = subprocess.Popen([sys.executable, "-m", "livecomments", "serve", *args, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    lines = err.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert lines[-1].startswith("Error: cannot open storage"), err
    assert sum(line.startswith("Error:") for line in lines) == 1, err
    assert "listening" not in out
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and alive(int(p.name))
            and str(tmp_path).encode() in _cmdline(p)]
    assert left == []


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
