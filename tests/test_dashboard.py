"""The cluster dashboard's JSON endpoint on a real cluster, and its arithmetic on real /metrics text."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from livecomments.benchmarks.common import parse_metrics
from livecomments.metrics import Metrics
from livecomments.ops.cluster import Cluster
from livecomments.ops.dashboard.guard import TOKEN_HEADER
from livecomments.ops.dashboard.server import DashboardServer, topology
from livecomments.ops.dashboard.stats import p99_ms, parse_scrape, rate

RECEIVED, DISCARDED = "livecomments_broker_messages_received_total", "livecomments_comments_discarded_total"
SMALL_LOAD = {"videos": 12, "viewers": 60, "zipf": 1.0, "rate": 25, "duration": 4}


def scrape_of(metrics: Metrics, at: float) -> Any:
    return parse_scrape(metrics.render().decode(), at)


def test_rates_and_p99_come_from_the_window_between_two_scrapes() -> None:
    m = Metrics()
    for _ in range(1000):  # before the window: slow deliveries that must not count
        m.latency.observe(3.0)
    m.received.inc(10)
    before = scrape_of(m, 100.0)
    for _ in range(995):
        m.latency.observe(0.004)
    for _ in range(5):
        m.latency.observe(0.02)
    m.received.inc(30)
    after = scrape_of(m, 102.0)
    assert rate(after, before, RECEIVED) == 15.0
    assert rate(after, None, RECEIVED) is None
    assert p99_ms(after, before) == (5.0, False)  # 995 of 1000 in the window are <= 5 ms
    assert p99_ms(after, after) == (None, False)  # nothing delivered in the window


def test_a_restarted_server_counts_from_zero_and_slow_tails_show_as_above() -> None:
    old, new = Metrics(), Metrics()
    old.received.inc(500)
    new.received.inc(8)
    new.latency.observe(9.0)  # above the last finite bucket (5 s)
    before, after = scrape_of(old, 10.0), scrape_of(new, 12.0)
    assert rate(after, before, RECEIVED) == 4.0
    assert p99_ms(after, scrape_of(Metrics(), 10.0)) == (5000.0, True)


class Board:
    def __init__(self, cluster: Cluster, url: str, http: aiohttp.ClientSession) -> None:
        self.cluster, self.url, self.http = cluster, url, http
        self.token = ""

    async def read_token(self) -> str:
        """The run's token, from the page, as the page's own script reads it."""
        async with self.http.get(self.url + "/") as resp:
            assert resp.status == 200
            found = re.search(r'<meta name="dashboard-token" content="([^"]+)">', await resp.text())
        assert found, "the page carries no token"
        self.token = found.group(1)
        return self.token

    def post_load(self, body: Any, **kwargs: Any) -> Any:
        """POST /api/load as the page does: JSON, with the token (kwargs override)."""
        headers = {TOKEN_HEADER: self.token} | kwargs.pop("headers", {})
        return self.http.post(self.url + "/api/load", json=body, headers=headers, **kwargs)

    async def state(self) -> dict[str, Any]:
        async with self.http.get(self.url + "/api/state") as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body

    async def until(self, what: str, check: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the endpoint (it scrapes once a second: no event crosses the processes) until check(state)."""
        async with asyncio.timeout(timeout):
            while not check(state := await self.state()):
                await asyncio.sleep(0.2)
        return state

    async def counters_waste(self) -> float:
        """discarded ÷ received from every realtime server's own /metrics."""
        received = discarded = 0.0
        for member in self.cluster.servers:
            async with self.http.get(member.url + "/metrics") as resp:
                values = parse_metrics(await resp.text())
            received, discarded = received + values[RECEIVED], discarded + values[DISCARDED]
        return discarded / received


async def open_board(tmp_path: Path, strategy: str, partitions: int | None) -> AsyncIterator[Board]:
    serve_args = ("--partitions", str(partitions)) if partitions is not None else ()
    cluster = Cluster(2, 1, strategy, policy="hash", workdir=str(tmp_path / "c"), serve_args=serve_args)
    await asyncio.to_thread(cluster.start)
    server = DashboardServer(topology(cluster, partitions))
    try:
        url = await asyncio.to_thread(server.start)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            board = Board(cluster, url, http)
            await board.read_token()
            yield board
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(cluster.stop)


@pytest.fixture
async def broadcast_board(tmp_path: Path) -> AsyncIterator[Board]:
    async for board in open_board(tmp_path, "broadcast", None):
        yield board


@pytest.fixture
async def per_video_board(tmp_path: Path) -> AsyncIterator[Board]:
    async for board in open_board(tmp_path, "partitioned", 0):
        yield board


async def run_load(board: Board) -> dict[str, Any]:
    async with board.post_load(SMALL_LOAD) as resp:
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["load"]["settings"]["viewers"] == 60
    await board.until("delivering", lambda s: (s["totals"]["delivered_per_s"] or 0) > 0)
    done = await board.until("load done", lambda s: s["load"]["state"] == "done")
    assert done["load"]["viewers_open"] == 60 and done["load"]["failed"] == 0
    assert done["load"]["posted"] == 100 and done["load"]["delivered"] > 0
    # the viewers are gone and the counters still: the endpoint's totals are the counters' own
    return await board.until("settled", lambda s: s["totals"]["connections"] == 0 and s["totals"]["received_per_s"] == 0)


@pytest.mark.timeout(90)
async def test_broadcast_with_hash_routing_wastes_what_the_counters_say(broadcast_board: Board) -> None:
    board = broadcast_board
    state = await board.state()
    assert (state["strategy"], state["policy"]) == ("broadcast", "hash")
    assert [s["name"] for s in state["servers"]] == ["rt1", "rt2"] and state["broker"]["kind"] == "redis"
    assert state["demo"] == board.cluster.url + "/demo/" and state["load"] is None

    state = await run_load(board)
    waste = await board.counters_waste()
    assert state["totals"]["waste_total"] == pytest.approx(waste, abs=1e-9)
    assert 0.2 < waste < 0.8  # each server receives every comment; about half are for the other's videos
    assert state["totals"]["received_total"] == 200  # 100 posts, each to both servers
    assert state["writers"][0]["stored_total"] == 100


@pytest.mark.timeout(90)
async def test_partitioned_per_video_with_hash_routing_wastes_nothing(per_video_board: Board) -> None:
    state = await run_load(per_video_board)
    assert state["strategy"] == "partitioned" and state["partitions"] == 0
    assert state["totals"]["waste_total"] == 0.0 == await per_video_board.counters_waste()
    assert state["totals"]["received_total"] == 100  # each comment reaches the one server that has its viewers
    await per_video_board.until("unsubscribed once the viewers left",
                                lambda s: all(server["subscriptions"] == 0 for server in s["servers"]))


@pytest.mark.timeout(90)
async def test_bad_load_settings_are_refused_and_one_run_at_a_time(broadcast_board: Board) -> None:
    board = broadcast_board
    for body, code in [(b"{", "invalid_json"), (b'{"viewers": -1}', "invalid_settings"),
                       (b'{"videos": 1.5}', "invalid_settings"), (b'{"viewers": true}', "invalid_settings"),
                       (b'{"threads": 4}', "invalid_settings"), (b"[]", "invalid_settings")]:
        async with board.http.post(board.url + "/api/load", data=body,
                                   headers={TOKEN_HEADER: board.token, "Content-Type": "application/json"}) as resp:
            assert resp.status == 400, body
            assert (await resp.json())["error"]["code"] == code
    assert (await board.state())["load"] is None  # nothing started

    long_run = SMALL_LOAD | {"duration": 600}
    async with board.post_load(long_run) as resp:
        assert resp.status == 202
    async with board.post_load(SMALL_LOAD) as resp:
        assert resp.status == 409 and (await resp.json())["error"]["code"] == "load_running"
    await board.until("running", lambda s: s["load"]["state"] == "running")
    async with board.http.delete(board.url + "/api/load", headers={TOKEN_HEADER: board.token}) as resp:
        assert resp.status == 200 and (await resp.json())["load"]["state"] == "stopped"
    await board.until("viewers gone", lambda s: s["totals"]["connections"] == 0)


async def refused(resp: aiohttp.ClientResponse, status: int, code: str) -> None:
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (status, code), body
    assert resp.content_type == "application/json" and body["error"]["message"]


@pytest.mark.timeout(90)
async def test_other_sites_and_other_host_names_cannot_start_or_read_anything(broadcast_board: Board) -> None:
    """A page elsewhere could POST text/plain without a preflight, and a DNS-rebinding page reaches
    the dashboard's socket under its own name: the first started load runs, the second read it all."""
    board = broadcast_board
    port = board.url.rsplit(":", 1)[1]
    text_plain = {TOKEN_HEADER: board.token, "Content-Type": "text/plain"}
    async with board.http.post(board.url + "/api/load", data=orjson.dumps(SMALL_LOAD), headers=text_plain) as resp:
        await refused(resp, 415, "unsupported_media_type")  # what a no-cors fetch or a form can send
    async with board.http.post(board.url + "/api/load", json=SMALL_LOAD) as resp:
        await refused(resp, 403, "bad_token")
    async with board.post_load(SMALL_LOAD, headers={TOKEN_HEADER: "guessed"}) as resp:
        await refused(resp, 403, "bad_token")
    async with board.http.delete(board.url + "/api/load") as resp:
        await refused(resp, 403, "bad_token")
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"https://127.0.0.1:{port}"):
        async with board.post_load(SMALL_LOAD, headers={"Origin": origin}) as resp:
            await refused(resp, 403, "foreign_origin")
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1", "", "[::1"):
        for method, path in (("GET", "/"), ("GET", "/api/state"), ("GET", "/dashboard.js"), ("POST", "/api/load")):
            async with board.http.request(method, board.url + path, json=SMALL_LOAD,
                                          headers={"Host": host, TOKEN_HEADER: board.token}) as resp:
                await refused(resp, 421, "wrong_host")  # the page (and its token) too
    assert (await board.state())["load"] is None  # nothing started

    # Its own page's calls pass, by any loopback name and with the Origin a browser sends.
    for name in ("localhost", "127.0.0.1"):
        async with board.http.get(f"{board.url}/api/state", headers={"Host": f"{name}:{port}"}) as resp:
            assert resp.status == 200
    async with board.post_load(SMALL_LOAD | {"duration": 600}, headers={"Origin": board.url}) as resp:
        assert resp.status == 202, await resp.text()
    async with board.http.delete(board.url + "/api/load", headers={TOKEN_HEADER: board.token,
                                                                   "Origin": board.url}) as resp:
        assert resp.status == 200 and (await resp.json())["load"]["state"] == "stopped"
