"""`livecomments load` from a terminal: the workload model against a real server, a progress line, a clean end."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import aiohttp
import pytest

from livecomments.benchmarks.common import parse_metrics
from tests.fixtures.processes import Spawn


async def load(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livecomments", "load", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):  # it must stop by itself after --duration
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.timeout(90)
async def test_load_posts_at_the_rate_shows_progress_and_ends_by_itself(
    spawn: Spawn,
) -> None:
    server = spawn()
    rc, out, err = await load("--url", server.url + "/", "--videos", "5", "--viewers", "30",
                              "--rate", "20", "--duration", "3")
    assert rc == 0, err
    lines = out.strip().splitlines()  # not a terminal: one progress line per second, then the final state
    assert len(lines) >= 3, out
    assert re.match(r"done\s+3/3 s  viewers 30/30  posted 60 \(0 failed\)  delivered [\d,]+  p99 [\d,]+ ms$",
                    lines[-1].strip()), out
    assert any(line.startswith("running") for line in lines), out
    delivered = int(re.search(r"delivered ([\d,]+)", lines[-1]).group(1).replace(",", ""))
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
        metrics = parse_metrics(await resp.text())
    assert metrics["livecomments_comments_stored_total"] == 60
    assert delivered == metrics["livecomments_comments_delivered_total"] > 0  # every delivery reached a viewer


def test_bad_settings_are_one_line_and_run_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "livecomments", "load", "--url", "http://127.0.0.1:9",
                             "--viewers", "100000"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "viewers must be between 0 and 5000, not 100000" in result.stderr


@pytest.mark.timeout(60)
async def test_an_unreachable_url_fails_with_one_line() -> None:
    rc, _, err = await load("--url", "http://127.0.0.1:9", "--viewers", "3", "--duration", "1")
    assert rc == 1
    assert err.strip().splitlines()[-1].startswith("Error: "), err
    assert "Traceback" not in err
