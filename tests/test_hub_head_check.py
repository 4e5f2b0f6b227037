"""The periodic head check: a comment that never reached a realtime process (lost by the broker,
a push, or a writer's publish path) reaches its viewers within about `repair_interval`, with no
later comment to reveal the gap."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.processes import RedisProcess, serve_args
from tests.helpers import metric, post
from tests.sse import open_stream

REPAIR = "0.3"  # --repair-interval: the wait below is bounded well above it


@pytest.mark.parametrize("strategy", ["broadcast", "partitioned", "dispatcher"])
async def test_the_last_comment_lost_on_its_way_still_reaches_the_viewer(
    strategy: str, spawn: Any, redis_server: RedisProcess, session: Any, tmp_path: Path,
) -> None:
    args = partial(serve_args, "--repair-interval", REPAIR, strategy=strategy)  # spawn(): one SQLite file for all
    rt = spawn(*args(role="realtime", transport=redis_server.url))
    writer = spawn(*args(role="writer", transport=redis_server.url))
    # A writer whose comments are stored but reach no realtime process: pub/sub to a Redis
    # nobody listens on; the dispatcher with a registry (another Redis DB) listing nobody.
    nowhere = RedisProcess(tmp_path / "unused").url if strategy != "dispatcher" else redis_server.url[:-1] + "1"
    lossy = spawn(*args(role="writer", transport=nowhere))
    viewer = await open_stream(session, rt.url, "X")
    await post(session, writer.url, "X", text="delivered")
    assert (await viewer.next_comment())["text"] == "delivered"
    # A head check may have read "delivered" from storage before its own delivery arrived.
    repaired = await metric(session, rt.url, "livecomments_gaps_repaired_total")
    lost = await post(session, lossy.url, "X", text="the last of the burst")
    got = await viewer.next_comment(timeout=10)  # within a few repair intervals, no later comment
    assert (got["seq"], got["text"]) == (lost["seq"], "the last of the burst")
    assert await metric(session, rt.url, "livecomments_gaps_repaired_total") == repaired + 1
    after = await post(session, writer.url, "X", text="then live again")
    assert (await viewer.next_comment())["seq"] == after["seq"]
