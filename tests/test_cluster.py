"""`livecomments cluster`: a whole system on free ports, used through its one URL, then gone."""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import aiohttp
import pytest

from livecomments.ops import cluster_services
from livecomments.ops.cluster import Cluster, ClusterError, find_binary
from tests.helpers import post
from tests.sse import close_streams, open_stream
from tests.ws import open_ws


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_cluster_command_serves_and_leaves_nothing_behind(tmp_path: Path, session):
    proc, out = await start_cluster_command(tmp_path, "--strategy", "partitioned")
    try:
        url = re.search(r"^url (\S+)", out, re.M).group(1)
        pids = [int(p) for p in re.findall(r" pid (\d+) ", out)]
        assert len(pids) == 5, out  # redis, w1, rt1, rt2, nginx

        stream = await open_stream(session, url, "clustered")
        assert stream.resp.headers["X-Served-By"] in ("rt1", "rt2")
        socket_viewer = await open_ws(session, url, "clustered")  # the WebSocket through nginx too
        await post(session, url, "clustered", text="through nginx")
        assert (await stream.next_comment())["text"] == "through nginx"
        assert (await socket_viewer.next_of("comment", timeout=10))["text"] == "through nginx"
        resumed = await open_ws(session, url, "clustered", since=0)  # a resume replays through it
        assert [m["text"] for m in resumed.opening if m["type"] == "comment"] == ["through nginx"]
        stream.close()
        for ws in (socket_viewer, resumed):
            await ws.ws.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            rc = await proc.wait()
    assert rc == 0, (await proc.stderr.read()).decode()
    assert [p for p in pids if group_exists(p)] == [], out


@pytest.mark.parametrize("strategy", ["broadcast", "dispatcher"])
async def test_cluster_api_round_robin_reaches_every_server(strategy: str, tmp_path: Path, session):
    """Round-robin puts one video's viewers on both servers; the comment must reach both."""
    c = Cluster(realtime=2, strategy=strategy, policy="round-robin", workdir=str(tmp_path / "c"))
    await asyncio.to_thread(c.start)
    try:
        assert [m.name for m in c.servers] == ["rt1", "rt2"]
        streams = [await open_stream(session, c.url, "shared") for _ in range(4)]
        assert {s.resp.headers["X-Served-By"] for s in streams} == {"rt1", "rt2"}
        sockets = [await open_ws(session, c.url, "shared") for _ in range(2)]  # round-robin spreads them too
        await post(session, c.url, "shared", text="to all")
        for s in streams:
            assert (await s.next_comment())["text"] == "to all"
            s.close()
        for ws in sockets:
            assert (await ws.next_of("comment", timeout=10))["text"] == "to all"
            await ws.ws.close()
    finally:
        await asyncio.to_thread(c.stop)
    assert not any(group_exists(m.pid) for m in c.members)


def test_missing_binary_names_the_install_command(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(cluster_services, "SBIN_PATH", str(tmp_path))
    with pytest.raises(ClusterError, match=r"nginx is not installed: sudo apt-get install nginx"):
        find_binary("nginx")
    with pytest.raises(ClusterError, match="apt-get install redis-server"):
        Cluster(realtime=1, strategy="partitioned", workdir=str(tmp_path / "c")).start()


def live_in_group(pgid: int) -> list[int]:
    """Pids of the group that are not zombies (an orphan's zombie may wait for a reaper that never comes)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                pids.append(int(entry.name))
    return pids


async def start_cluster_command(tmp_path: Path, *args: str, workdir: bool = True,
                                timeout: float = 30) -> tuple[asyncio.subprocess.Process, str]:
    """`workdir=False`: the launcher makes its own temp dir, under tmp_path (TMPDIR)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livecomments", "cluster", "--realtime", "2", "--writers", "1",
        *(["--workdir", str(tmp_path / "c")] if workdir else []), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    out = ""
    async with asyncio.timeout(timeout):
        while "Ctrl-C stops everything." not in out:
            line = await proc.stdout.readline()
            if not line:
                pytest.fail(f"cluster exited: {out}{(await proc.stderr.read()).decode()}")
            out += line.decode()
    return proc, out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP, signal.SIGTERM], ids=["SIGKILL", "SIGHUP", "SIGTERM"])
async def test_children_die_with_the_launcher(sig: int, tmp_path: Path):
    """SIGKILL: the kernel's parent-death signal ends them; SIGHUP (terminal closed), SIGTERM: stop() ends them.
    The launcher exits within 10 s (issue 24: it could hang for ever; test_stop_signals.py sends 200)."""
    proc, out = await start_cluster_command(tmp_path, "--strategy", "partitioned")
    pgids = [int(p) for p in re.findall(r" pid (\d+) ", out)]
    assert len(pgids) == 5, out  # redis, w1, rt1, rt2, nginx (with its workers in its group)
    try:
        proc.send_signal(sig)
        async with asyncio.timeout(10):
            await proc.wait()
        left: dict[int, list[int]] = {}
        async with asyncio.timeout(20):  # livecomments ends its streams and commits: a few seconds at most
            while left := {g: pids for g in pgids if (pids := live_in_group(g))}:
                await asyncio.sleep(0.1)  # other processes: nothing to await but their exit
    finally:
        for pgid in pgids:
            if live_in_group(pgid):
                os.killpg(pgid, signal.SIGKILL)
    assert left == {}, out


def test_a_taken_port_is_one_line_and_starts_nothing(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the taken port is the writer's; the old launcher started it and failed with its log's tail
        done = subprocess.run(
            [sys.executable, "-m", "livecomments", "cluster", "--realtime", "1", "--writers", "1", "--lb", "none",
             "--strategy", "partitioned", "--broker-url", "redis://127.0.0.1:1/0", "--base-port", str(port),
             "--workdir", str(tmp_path / "c")],
            capture_output=True, text=True, timeout=30,
        )
    err = done.stderr.strip()
    assert done.returncode != 0 and len(err.splitlines()) == 1 and f"port {port} is taken" in err, err
    assert "Ctrl-C" not in done.stdout
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("*.log"))


async def test_bounded_spreads_a_hot_video_and_keeps_cold_ones_on_one_server(tmp_path: Path):
    """`cluster --lb haproxy --policy bounded`: HAProxy's hash-balance-factor 125 over 4 realtime servers.
    160 viewers of 160 videos make the background; then 4 cold videos with 3 viewers each, then a hot
    video with 48. Viewers connect one after another (each waits for its first frame), so HAProxy sees
    one fixed sequence and the placement is the same on every run."""
    c = Cluster(realtime=4, strategy="partitioned", lb="haproxy", policy="bounded", workdir=str(tmp_path / "c"))
    await asyncio.to_thread(c.start)
    try:
        assert "hash-balance-factor 125" in (c.workdir / "haproxy.cfg").read_text()
        served: dict[str, list[str]] = defaultdict(list)
        hot = []
        # more streams than the shared session's pool of 100
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for video in [f"bg-{i}" for i in range(160)] + [f"cold-{i // 3}" for i in range(12)] + ["hot"] * 48:
                stream = await open_stream(session, c.url, video)
                served[video].append(stream.resp.headers["X-Served-By"])
                if video == "hot":
                    hot.append(stream)
            load = Counter(server for servers in served.values() for server in servers)
            assert len(set(served["hot"])) >= 2, served["hot"]  # plain hash holds all 48 on one server
            assert max(load.values()) <= math.ceil(1.25 * sum(load.values()) / 4) + 1, load
            assert all(len(set(served[f"cold-{i}"])) == 1 for i in range(4)), served
            await post(session, c.url, "hot", text="to every server")
            for stream in hot:
                assert (await stream.next_comment())["text"] == "to every server"
            close_streams(session)
    finally:
        await asyncio.to_thread(c.stop)
    assert not any(group_exists(m.pid) for m in c.members)


def test_bounded_needs_haproxy(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="policy bounded needs --lb haproxy"):
        Cluster(realtime=2, policy="bounded", workdir=str(tmp_path / "c"))


async def test_cluster_prints_the_demo_url_and_passes_partitions_without_a_dashboard(tmp_path: Path):
    proc, out = await start_cluster_command(tmp_path, "--strategy", "partitioned", "--partitions", "0",
                                            "--no-dashboard")
    try:
        url = re.search(r"^url (\S+)", out, re.M).group(1)
        assert re.search(rf"^demo {re.escape(url)}/demo/$", out, re.M), out
        assert re.search(rf"^demo-ws {re.escape(url)}/demo/\?video=\w+&transport=ws$", out, re.M), out
        assert re.search(r"^rate limits off: .*one address", out, re.M), out  # said, with the why
        assert f"workdir {tmp_path / 'c'} (kept)" in out  # --workdir given: never removed
        assert "dashboard" not in out
        for pid in re.findall(r"^  (?:w|rt)\d\s+\S+\s+pid (\d+)", out, re.M):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert argv[argv.index(b"--partitions") + 1] == b"0"  # one channel per video, on every server
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0


def member_lines(out: str) -> dict[str, tuple[str, int]]:
    """name → (url, pid) from the launcher's listing."""
    return {name: (url, int(pid)) for name, url, pid in re.findall(r"^  (\S+)\s+(\S+)\s+pid (\d+) ", out, re.M)}


async def test_no_secret_on_any_command_line(tmp_path: Path, session):
    """Issue 23: any local user reads /proc/PID/cmdline; the dispatcher's secret goes through the environment."""
    proc, out = await start_cluster_command(tmp_path, "--strategy", "dispatcher", "--no-dashboard")
    try:
        members = member_lines(out)
        assert set(members) == {"redis", "w1", "rt1", "rt2", "nginx"}, out
        environ = Path(f"/proc/{members['rt1'][1]}/environ").read_bytes().split(b"\0")
        secret = next(v.split(b"=", 1)[1] for v in environ if v.startswith(b"LIVECOMMENTS_CLUSTER_SECRET="))
        assert len(secret) == 32
        pids = [pid for _, pgid in members.values() for pid in live_in_group(pgid)]  # nginx's workers too
        assert len(pids) > len(members)
        shown = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids}
        assert [pid for pid, cmdline in shown.items() if secret in cmdline or b"--cluster-secret" in cmdline] == [], shown
        stream = await open_stream(session, members["nginx"][0], "signed")  # the pushes are signed with it
        await post(session, members["nginx"][0], "signed", text="pushed")
        assert (await stream.next_comment())["text"] == "pushed"
        stream.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0


def test_a_secret_in_a_serve_arg_is_refused_in_one_line(tmp_path: Path):
    with pytest.raises(ClusterError, match="set LIVECOMMENTS_AUTH_JWT_SECRET in the environment"):
        Cluster(serve_args=["--auth-jwt-secret=" + "k" * 32], workdir=str(tmp_path / "c"))
    with pytest.raises(ClusterError, match="set LIVECOMMENTS_STORAGE in the environment"):
        Cluster(serve_args=["--storage", "postgresql://lc:hunter2@db/lc"], workdir=str(tmp_path / "c"))


async def test_a_killed_member_is_reaped_and_replaced_on_its_port(tmp_path: Path, session):
    """Issue 23: kill -9 of one realtime server stopped the whole cluster; now it comes back, the rest stays."""
    proc, out = await start_cluster_command(tmp_path, "--strategy", "partitioned", "--no-dashboard")
    try:
        members = member_lines(out)
        lb, (rt1, old) = members["nginx"][0], members["rt1"]
        streams = {f"v{i}": await open_stream(session, lb, f"v{i}") for i in range(8)}
        stayed = [(video, s) for video, s in streams.items() if s.resp.headers["X-Served-By"] == "rt2"]
        assert stayed, "no stream landed on rt2"
        video, kept = stayed[0]
        os.kill(old, signal.SIGKILL)
        said = ""
        async with asyncio.timeout(15):
            while not (started := re.search(r"^rt1 started again: pid (\d+)$", said, re.M)):
                line = await proc.stderr.readline()
                assert line, f"the launcher exited: {said}"
                said += line.decode()
                if "rt1 (pid" in line.decode():  # reaped at once: no zombie left in /proc
                    assert f"rt1 (pid {old}) exited with -9; starting it again in 1 s" in said, said
                    assert not Path(f"/proc/{old}").exists()
        new = int(started.group(1))
        assert new != old and f"--port\0{rt1.rsplit(':', 1)[1]}\0".encode() in Path(f"/proc/{new}/cmdline").read_bytes()
        async with asyncio.timeout(15):
            while True:  # another process: nothing to await but its answer
                try:
                    async with session.get(rt1 + "/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        replacement = await open_stream(session, rt1, "v-new")
        assert replacement.resp.headers["X-Served-By"] == "rt1"
        await post(session, lb, video, text="after the crash")
        assert (await kept.next_comment())["text"] == "after the crash"  # its viewers were never dropped
        await post(session, lb, "v-new", text="to the replacement")
        assert (await replacement.next_comment())["text"] == "to the replacement"
        assert proc.returncode is None
        close_streams(session)
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0


async def stop_command(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await proc.wait() == 0, (await proc.stderr.read()).decode()


async def test_no_balancer_prints_urls_that_work_and_removes_its_temp_workdir(tmp_path: Path, session):
    """Issue 22 (11, 20): with --lb none the printed demo, stream and load URLs were the writer's (404);
    the temp workdir stayed in /tmp. Here every printed URL is followed, then the dir must be gone."""
    proc, out = await start_cluster_command(tmp_path, "--lb", "none", "--strategy", "partitioned",
                                            "--no-dashboard", workdir=False)
    try:
        url = re.search(r"^url (\S+)$", out, re.M).group(1)
        members = member_lines(out)
        assert url == members["rt1"][0] and "nginx" not in members, out
        assert re.search(r"^no balancer: rt1 serves the demo, posts and streams", out, re.M), out
        workdir = Path(re.search(r"^workdir (\S+) \(removed at exit", out, re.M).group(1))
        assert workdir.parent == tmp_path and (workdir / "livecomments.db").exists()
        for line in ("demo", "demo-ws"):
            page = re.search(rf"^{line} (\S+)$", out, re.M).group(1)
            async with session.get(page) as resp:
                assert resp.status == 200 and "text/html" in resp.content_type, (page, resp.status)
        stream = await open_stream(session, url, "direct")
        assert stream.resp.headers["X-Served-By"] == "rt1"
        other = await open_stream(session, members["rt2"][0], "direct")  # the comment reaches rt2 too
        await post(session, url, "direct", text="no balancer")
        for s in (stream, other):
            assert (await s.next_comment())["text"] == "no balancer"
        close_streams(session)
        load = re.search(r"^load livecomments load --url (\S+)$", out, re.M).group(1)
        done = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "livecomments", "load", "--url", load, "--videos", "3", "--viewers", "6",
            "--rate", "10", "--duration", "1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(60):
            said, err = await done.communicate()
        last = said.decode().strip().splitlines()[-1]
        assert done.returncode == 0 and last.startswith("done") and "(0 failed)" in last, (said, err)
        assert int(re.search(r"delivered (\d+)", last).group(1)) > 0, last
    finally:
        await stop_command(proc)
    assert not workdir.exists()


async def test_dispatcher_on_its_own_zookeeper(tmp_path: Path, session):
    """`cluster --registry zk` starts ZooKeeper itself (ops/zk_server.py) and runs the dispatcher on it."""
    proc, out = await start_cluster_command(tmp_path, "--strategy", "dispatcher", "--registry", "zk",
                                            "--no-dashboard", timeout=60)
    try:
        members = member_lines(out)
        assert set(members) == {"zookeeper", "w1", "rt1", "rt2", "nginx"}, out  # no redis-server
        registry = members["zookeeper"][0]
        assert re.fullmatch(r"zk://127\.0\.0\.1:\d+/lc", registry), registry
        argv = Path(f"/proc/{members['rt1'][1]}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--registry") + 1] == registry.encode()
        lb = members["nginx"][0]
        streams = [await open_stream(session, lb, f"zk-{i}") for i in range(4)]
        for i in range(len(streams)):
            await post(session, lb, f"zk-{i}", text=f"pushed {i}")
        for i, stream in enumerate(streams):
            assert (await stream.next_comment())["text"] == f"pushed {i}"  # a push to the holder the registry named
        close_streams(session)
    finally:
        await stop_command(proc)
    assert not group_exists(members["zookeeper"][1])
