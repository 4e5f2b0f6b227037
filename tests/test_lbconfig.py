"""lb-config against a real nginx (and HAProxy) in front of real realtime servers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from livecomments.ops.lbconfig import Balancer, lb_config, render
from livecomments.ops.ring import HashRing
from tests.fixtures.nginx import binary
from tests.helpers import post
from tests.sse import SSEReader, open_stream

VIDEOS = [f"video-{i}" for i in range(12)]


async def three_servers(start_server) -> dict[str, str]:
    """server id -> HOST:PORT of three realtime servers (role both: they also answer health)."""
    servers = {}
    for n in (1, 2, 3):
        url = await start_server(server_id=f"rt{n}")
        servers[f"rt{n}"] = url.removeprefix("http://")
    return servers


async def watch(session: aiohttp.ClientSession, base: str, videos: list[str]) -> list[str]:
    """Open one stream per entry, return X-Served-By of each. Streams stay open in batches of 60
    (the session's pool holds 100), so round-robin really spreads concurrent viewers."""
    served: list[str] = []
    for i in range(0, len(videos), 60):
        readers = await asyncio.gather(*(open_stream(session, base, v) for v in videos[i:i + 60]))
        served += [r.resp.headers["X-Served-By"] for r in readers]
        for r in readers:
            r.close()
    return served


async def placement(session: aiohttp.ClientSession, base: str, videos: list[str]) -> dict[str, str]:
    return dict(zip(videos, await watch(session, base, videos), strict=True))


async def test_hash_keeps_each_video_on_one_server_where_the_ring_says(start_server, start_proxy, session):
    servers = await three_servers(start_server)
    nginx = start_proxy(list(servers.values()), [servers["rt1"]], "hash")
    viewers = [VIDEOS[k % 12] for k in range(60)]
    served = await watch(session, nginx.url, viewers)

    by_video: dict[str, set[str]] = defaultdict(set)
    for video, server in zip(viewers, served, strict=True):
        by_video[video].add(server)
    assert all(len(s) == 1 for s in by_video.values()), by_video
    assert len(set(served)) > 1, "12 videos should not all hash to one of three servers"
    ring = HashRing(list(servers.values()))
    assert {v: servers[s.pop()] for v, s in by_video.items()} == {v: ring.node_for(v) for v in VIDEOS}


async def test_ring_agrees_with_nginx_on_many_keys(start_server, start_proxy, session):
    servers = await three_servers(start_server)
    nginx = start_proxy(list(servers.values()), [servers["rt1"]], "hash")
    videos = [f"k{i}" for i in range(150)]
    seen = await placement(session, nginx.url, videos)
    ring = HashRing(list(servers.values()))
    assert {v: servers[s] for v, s in seen.items()} == {v: ring.node_for(v) for v in videos}


async def test_round_robin_spreads_a_video(start_server, start_proxy, session):
    servers = await three_servers(start_server)
    nginx = start_proxy(list(servers.values()), [servers["rt1"]], "round-robin")
    viewers = [VIDEOS[k // 5] for k in range(60)]  # five consecutive viewers per video
    served = await watch(session, nginx.url, viewers)
    by_video: dict[str, set[str]] = defaultdict(set)
    for video, server in zip(viewers, served, strict=True):
        by_video[video].add(server)
    assert set(served) == set(servers)
    assert all(len(s) > 1 for s in by_video.values()), by_video


async def test_removing_a_backend_moves_only_its_videos(start_server, start_proxy, session):
    servers = await three_servers(start_server)
    videos = [f"m{i}" for i in range(60)]
    before = await placement(session, start_proxy(list(servers.values()), [servers["rt1"]]).url, videos)
    counts: dict[str, int] = defaultdict(int)
    for server in before.values():
        counts[server] += 1
    gone = max(counts, key=counts.__getitem__)
    rest = [addr for sid, addr in servers.items() if sid != gone]
    after = await placement(session, start_proxy(rest, [rest[0]]).url, videos)

    moved = {v for v in videos if after[v] != before[v]}
    assert moved == {v for v in videos if before[v] == gone}
    assert moved and gone not in after.values()


async def test_sse_through_nginx_is_unbuffered(start_server, start_proxy, session):
    direct = await start_server(server_id="rt1")
    addr = direct.removeprefix("http://")
    nginx = start_proxy([addr], [addr], "hash")
    stream = await open_stream(session, nginx.url, "live")
    assert stream.resp.headers.get("Content-Encoding") is None
    await post(session, nginx.url, "live", text="first")
    # One small event, far below any proxy buffer: a buffering proxy would hold it back.
    comment = await stream.next_comment(timeout=2.0)
    assert comment["text"] == "first"
    assert not stream.resp.content.at_eof()


async def test_nginx_routes_health_and_hides_internal(start_server, start_proxy, session):
    addr = (await start_server(server_id="rt1")).removeprefix("http://")
    nginx = start_proxy([addr], [addr])
    async with session.get(f"{nginx.url}/healthz") as r:
        assert r.status == 200
    async with session.get(f"{nginx.url}/readyz") as r:
        assert r.status == 200
    async with session.post(f"{nginx.url}/internal/v1/deliver", data=b"{}") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "not_found"
    async with session.get(f"{nginx.url}/metrics") as r:
        assert r.status == 404
    async with session.get(f"{nginx.url}/v1/videos/x/comments") as r:
        assert r.status == 200


async def test_haproxy_config_routes_by_video(start_server, start_proxy, session):
    servers = await three_servers(start_server)
    haproxy = start_proxy(list(servers.values()), [servers["rt1"]], "hash", fmt="haproxy")
    viewers = [VIDEOS[k % 12] for k in range(36)]
    served = await watch(session, haproxy.url, viewers)
    by_video: dict[str, set[str]] = defaultdict(set)
    for video, server in zip(viewers, served, strict=True):
        by_video[video].add(server)
    assert all(len(s) == 1 for s in by_video.values()), by_video
    assert len(set(served)) > 1
    await post(session, haproxy.url, "video-0")
    async with session.post(f"{haproxy.url}/internal/v1/deliver", data=b"{}") as r:
        assert r.status == 404


@pytest.mark.parametrize("fmt", ["nginx", "haproxy"])
async def test_the_demo_page_is_reachable_through_the_balancer(fmt: str, start_server, start_proxy, session):
    addr = (await start_server(server_id="rt1")).removeprefix("http://")
    proxy = start_proxy([addr], [addr], fmt=fmt)
    async with session.get(f"{proxy.url}/?video=abc", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/demo/?video=abc"
    async with session.get(f"{proxy.url}/demo/") as r:
        assert r.status == 200 and r.content_type == "text/html"
    async with session.get(f"{proxy.url}/demo/config.json") as r:
        assert r.status == 200 and "max_text" in await r.json()
    async with session.get(f"{proxy.url}/elsewhere") as r:
        assert r.status == 404


def test_haproxy_and_nginx_accept_the_configs(tmp_path: Path):
    for policy in ("hash", "round-robin", "bounded"):
        b = Balancer("127.0.0.1:8080", ["127.0.0.1:9001", "127.0.0.1:9002"], ["127.0.0.1:9000"],
                     policy, str(tmp_path))
        (tmp_path / "h.cfg").write_text(render(b, "haproxy"))
        checks = [[binary("haproxy", "haproxy"), "-c", "-f", str(tmp_path / "h.cfg")]]
        if policy != "bounded":  # nginx has no bounded loads: refused, see below
            (tmp_path / "n.conf").write_text(render(b, "nginx"))
            checks.append([binary("nginx", "nginx"), "-t", "-e", str(tmp_path / "e.log"), "-c", str(tmp_path / "n.conf")])
        for args in checks:
            done = subprocess.run(args, capture_output=True, timeout=10)
            assert done.returncode == 0, done.stderr.decode()


def test_bounded_is_haproxys_hash_balance_factor_and_nginx_refuses_it():
    args = ["--backend", "127.0.0.1:9001", "--backend", "127.0.0.1:9002", "--writer", "127.0.0.1:9000",
            "--policy", "bounded"]
    haproxy = CliRunner().invoke(lb_config, [*args, "--format", "haproxy", "--balance-factor", "1.5"])
    assert haproxy.exit_code == 0, haproxy.output
    backend = haproxy.output.split("\nbackend livecomments_realtime", 1)[1].split("\nbackend ", 1)[0]
    assert "    balance hash path,field(4,/)\n    hash-type consistent\n    hash-balance-factor 150\n" in backend
    done = subprocess.run([sys.executable, "-m", "livecomments", "lb-config", *args], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "Error: nginx has no bounded-load hashing: use --format haproxy for --policy bounded (hash-balance-factor)"
    ]
    low = CliRunner().invoke(lb_config, [*args, "--format", "haproxy", "--balance-factor", "1"])
    assert low.exit_code != 0 and "--balance-factor" in low.output


@pytest.mark.parametrize("fmt", ["nginx", "haproxy"])
async def test_a_stream_starts_before_anything_is_posted(fmt: str, start_server, start_proxy, session):
    """The server's first frame (retry:) is a few bytes: a proxy that buffered or held it (HAProxy
    2.6 did, ~200 ms, until `option http-no-delay`) would show nothing until a comment came."""
    addr = (await start_server(server_id="rt1")).removeprefix("http://")
    proxy = start_proxy([addr], [addr], "hash", fmt=fmt)
    for i in range(3):
        resp = await session.get(f"{proxy.url}/v1/videos/quick-{i}/stream")
        stream = SSEReader(resp)
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        first = await stream.next(timeout=5.0)  # nothing was posted to quick-{i}: only the server's own frame
        assert (first.retry, first.event, first.data, first.id) == (2000, "message", "", None), first
        assert not resp.content.at_eof()
        await post(session, proxy.url, f"quick-{i}", text=f"after {i}")
        assert (await stream.next_comment(timeout=5.0))["text"] == f"after {i}"
        stream.close()


def test_cli_prints_config_and_refuses_bad_addresses():
    runner = CliRunner()
    ok = runner.invoke(lb_config, ["--backend", "127.0.0.1:9001", "--writer", "127.0.0.1:9000"])
    assert ok.exit_code == 0, ok.output
    assert "hash $video_id consistent;" in ok.output
    assert "proxy_buffering off;" in ok.output
    rr = runner.invoke(lb_config, ["--backend", "127.0.0.1:9001", "--writer", "127.0.0.1:9000",
                                   "--policy", "round-robin"])
    assert "hash $video_id" not in rr.output
    bad = runner.invoke(lb_config, ["--backend", "nohost", "--writer", "127.0.0.1:9000"])
    assert bad.exit_code != 0 and "HOST:PORT" in bad.output


@pytest.mark.parametrize("args", [
    ["--backend", "http://127.0.0.1:9001", "--writer", "127.0.0.1:9000"],
    ["--backend", "127.0.0.1:9001", "--writer", "127.0.0.1:9000/"],
    ["--backend", "nohost", "--writer", "127.0.0.1:9000"],
    ["--backend", "127.0.0.1:9001", "--writer", "127.0.0.1:9000", "--listen", "127.0.0.1:99999"],
])
def test_cli_refuses_what_is_not_host_port_in_one_line(args):
    """A URL used to pass (rpartition(':') took 'http://127.0.0.1' for the host) and nginx failed later."""
    done = subprocess.run([sys.executable, "-m", "livecomments", "lb-config", *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "expected HOST:PORT" in done.stderr, done.stderr


@pytest.mark.parametrize(("path", "fmt"), [("nginx.example.conf", "nginx"),
                                         ("haproxy.example.cfg", "haproxy")])
def test_examples_are_what_the_generator_prints(path: str, fmt: str):
    """Regenerate with: livecomments lb-config --listen 127.0.0.1:8080 --backend 127.0.0.1:9001 …9004
    --writer 127.0.0.1:9000 --workdir /var/lib/livecomments [--format haproxy] > config/<file>"""
    backends = [f"127.0.0.1:{p}" for p in range(9001, 9005)]
    expected = render(Balancer("127.0.0.1:8080", backends, ["127.0.0.1:9000"], workdir="/var/lib/livecomments"), fmt)
    assert (Path(__file__).parent.parent / "config" / path).read_text() == expected
