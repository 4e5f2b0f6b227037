"""The dashboard's "Start load" without the bench extra: a clear error answer, not a run stuck in
`starting` (its ImportError used to die unseen in the run's task)."""

from __future__ import annotations

import asyncio
import re
import sys

import aiohttp

# A real dashboard in an interpreter where numpy cannot be imported (as without the bench extra).
CHILD = """
import sys
sys.modules["numpy"] = None  # `import numpy` raises ModuleNotFoundError, as when it is not installed
from livecomments.ops.dashboard.server import DashboardServer
from livecomments.ops.dashboard.stats import Topology
board = DashboardServer(Topology("broadcast", "hash", None, "http://127.0.0.1:9", (), (), ""))
print(board.start(), flush=True)
sys.stdin.read()  # until the test closes it
board.stop()
"""


async def test_start_load_without_the_bench_extra_says_so(session: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(20):
            url = (await proc.stdout.readline()).decode().strip()
        assert url.startswith("http://"), (await proc.stderr.read()).decode()
        async with session.get(url + "/") as resp:  # the page carries the token the load button sends
            token = re.search(r'<meta name="dashboard-token" content="([^"]*)">', await resp.text())
        headers = {"X-Dashboard-Token": token.group(1)} if token else {}
        settings = {"videos": 2, "viewers": 4, "rate": 1, "duration": 1}
        async with session.post(url + "/api/load", json=settings, headers=headers) as resp:
            assert resp.status == 503
            error = (await resp.json())["error"]
        assert error["code"] == "bench_missing"
        assert "numpy" in error["message"] and "pip install 'livecomments[bench]'" in error["message"]
        async with session.get(url + "/api/state") as resp:
            assert (await resp.json())["load"] is None  # no run left "starting"
    finally:
        proc.stdin.close()
        async with asyncio.timeout(20):
            await proc.wait()
