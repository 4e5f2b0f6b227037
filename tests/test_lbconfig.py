"""lb-config against a real nginx (and HAProxy) in front of real realtime servers."""

from __future__ import annotations

import asyncio
import subprocess
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from livecomments.lbconfig import Balancer, lb_config, render
from livecomments.ring import HashRing
from tests.fixtures.nginx import binary
from tests.helpers import post
from tests.sse import open_stream

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


def test_haproxy_and_nginx_accept_the_configs(tmp_path: Path):
    for policy in ("hash", "round-robin"):
        b = Balancer("127.0.0.1:8080", ["127.0.0.1:9001", "127.0.0.1:9002"], ["127.0.0.1:9000"],
                     policy, str(tmp_path))
        (tmp_path / "h.cfg").write_text(render(b, "haproxy"))
        (tmp_path / "n.conf").write_text(render(b, "nginx"))
        for args in ([binary("haproxy", "haproxy"), "-c", "-f", str(tmp_path / "h.cfg")],
                     [binary("nginx", "nginx"), "-t", "-e", str(tmp_path / "e.log"),
                      "-c", str(tmp_path / "n.conf")]):
            done = subprocess.run(args, capture_output=True, timeout=10)
            assert done.returncode == 0, done.stderr.decode()


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
    assert bad.exit_code == 2 and "HOST:PORT" in bad.output


@pytest.mark.parametrize(("path", "fmt"), [("nginx.example.conf", "nginx"),
                                         ("haproxy.example.cfg", "haproxy")])
def test_examples_are_what_the_generator_prints(path: str, fmt: str):
    """Regenerate with: livecomments lb-config --listen 127.0.0.1:8080 --backend 127.0.0.1:9001 …9004
    --writer 127.0.0.1:9000 --workdir /tmp [--format haproxy] > config/<file>"""
    backends = [f"127.0.0.1:{p}" for p in range(9001, 9005)]
    expected = render(Balancer("127.0.0.1:8080", backends, ["127.0.0.1:9000"], workdir="/tmp"), fmt)
    assert (Path(__file__).parent.parent / "config" / path).read_text() == expected
