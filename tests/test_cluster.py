"""`livecomments cluster`: a whole system on free ports, used through its one URL, then gone."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from livecomments import cluster as cluster_module
from livecomments.cluster import Cluster, ClusterError, find_binary
from tests.helpers import post
from tests.sse import open_stream


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_cluster_command_serves_and_leaves_nothing_behind(tmp_path: Path, session):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livecomments", "cluster", "--realtime", "2", "--writers", "1",
        "--strategy", "partitioned", "--workdir", str(tmp_path / "c"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out = ""
        async with asyncio.timeout(30):
            while "Ctrl-C stops everything." not in out:
                line = await proc.stdout.readline()
                if not line:
                    pytest.fail(f"cluster exited: {out}{(await proc.stderr.read()).decode()}")
                out += line.decode()
        url = re.search(r"^url (\S+)", out, re.M).group(1)
        pids = [int(p) for p in re.findall(r" pid (\d+) ", out)]
        assert len(pids) == 5, out  # redis, w1, rt1, rt2, nginx

        stream = await open_stream(session, url, "clustered")
        assert stream.resp.headers["X-Served-By"] in ("rt1", "rt2")
        await post(session, url, "clustered", text="through nginx")
        assert (await stream.next_comment())["text"] == "through nginx"
        stream.close()
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
        await post(session, c.url, "shared", text="to all")
        for s in streams:
            assert (await s.next_comment())["text"] == "to all"
            s.close()
    finally:
        await asyncio.to_thread(c.stop)
    assert not any(group_exists(m.pid) for m in c.members)


def test_missing_binary_names_the_install_command(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(cluster_module, "SBIN_PATH", str(tmp_path))
    with pytest.raises(ClusterError, match=r"nginx is not installed: sudo apt-get install nginx"):
        find_binary("nginx")
    with pytest.raises(ClusterError, match="apt-get install redis-server"):
        Cluster(realtime=1, strategy="partitioned", workdir=str(tmp_path / "c")).start()
