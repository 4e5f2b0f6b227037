"""No credential in the balancer's logs (issue 23): `?access_token=` (how EventSource sends a token
with auth_streams on) never reaches nginx's or HAProxy's logs, which are files of mode 0640 or
tighter, where the operator says (not a fixed path in the shared /tmp)."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
from click.testing import CliRunner

from livecomments.ops.cluster import Cluster
from livecomments.ops.lbconfig import lb_config
from tests.fixtures.nginx import Proxy
from tests.fixtures.processes import free_port
from tests.helpers import post
from tests.sse import SSEReader

JWT_SECRET = "a-test-secret-of-at-least-32-bytes!"
HOSTS = ["--backend", "127.0.0.1:9001", "--writer", "127.0.0.1:9000"]


def token(sub: str = "ana") -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")


def assert_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & ~0o640 == 0, f"{path} is {oct(mode)}: the log must be 0640 or tighter"


async def log_line(path: Path, needle: str, timeout: float = 10.0) -> str:
    """The balancer writes a request's log line once the request ended, after the client saw it
    end: poll the file (bounded) until the line is there."""
    async with asyncio.timeout(timeout):
        while needle not in (text := path.read_text(errors="replace")):
            await asyncio.sleep(0.05)
    return next(line for line in text.splitlines() if needle in line)


@pytest.mark.parametrize("fmt", ["nginx", "haproxy"])
async def test_an_access_token_in_the_query_reaches_no_log(fmt: str, start_server, start_proxy,
                                                           session: aiohttp.ClientSession) -> None:
    addr = (await start_server(server_id="rt1", auth_jwt_secret=JWT_SECRET, auth_streams=True)).removeprefix("http://")
    proxy: Proxy = start_proxy([addr], [addr], fmt=fmt)
    secret = token()
    resp = await session.get(f"{proxy.url}/v1/videos/tok-stream/stream", params={"access_token": secret})
    stream = SSEReader(resp)
    assert resp.status == 200, await resp.text()  # the token was good: the server took it from the query
    assert (await stream.next()).retry is not None
    await post(session, proxy.url, "tok-stream", text="seen", headers={"Authorization": f"Bearer {secret}"})
    assert (await stream.next_comment())["text"] == "seen"
    stream.close()
    async with session.get(f"{proxy.url}/v1/videos/tok-stream/comments", params={"access_token": secret}) as r:
        assert r.status == 200

    line = await log_line(proxy.access_log, "/v1/videos/tok-stream/stream")
    assert '"GET /v1/videos/tok-stream/stream HTTP/1.1" 200' in line, line  # the path, without the query
    await log_line(proxy.access_log, "/v1/videos/tok-stream/comments")
    for log in {proxy.access_log, proxy.error_log, proxy.log_path}:
        text = log.read_text(errors="replace")
        assert secret not in text and secret.split(".")[2] not in text, f"{log}:\n{text}"
        assert "access_token" not in text, f"{log}:\n{text}"
        assert_private(log)


async def test_nginx_request_errors_leave_the_token_out_of_the_error_log(start_proxy,
                                                                        session: aiohttp.ClientSession) -> None:
    """nginx prints the whole request line (query and all) in every request error it logs, so a
    refused upstream would put the token in the error log at any level below emerg."""
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: every request is an upstream error
    nginx: Proxy = start_proxy([dead], [dead])
    secret = token()
    for path in ("/v1/videos/tok-dead/stream", "/v1/videos/tok-dead/comments"):
        async with session.get(nginx.url + path, params={"access_token": secret}) as r:
            assert r.status == 502
    line = await log_line(nginx.access_log, "/v1/videos/tok-dead/comments")
    assert " 502 " in line and f"upstream={dead}" in line, line  # what failed still shows, query aside
    for log in (nginx.error_log, nginx.access_log):
        assert secret not in log.read_text(errors="replace"), log
        assert_private(log)


def test_lb_config_writes_logs_where_told_and_creates_them_0640(tmp_path: Path) -> None:
    access, error = tmp_path / "logs" / "access.log", tmp_path / "logs" / "error.log"
    access.parent.mkdir()
    error.write_text("")
    error.chmod(0o666)  # an existing file readable (and writable) by everyone is tightened
    done = CliRunner().invoke(lb_config, [*HOSTS, "--workdir", str(tmp_path / "wd"), "--access-log", str(access),
                                          "--error-log", str(error)])
    assert done.exit_code == 0, done.output
    assert f"    access_log {access} livecomments;\n" in done.output
    assert f"\nerror_log {error} emerg;\n" in done.output
    for log in (access, error):
        assert stat.S_IMODE(log.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "wd").stat().st_mode) == 0o700
    assert "/tmp/livecomments-nginx" not in done.output


def test_lb_config_defaults_to_a_directory_of_the_users_own(tmp_path: Path) -> None:
    done = CliRunner().invoke(lb_config, HOSTS, env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert done.exit_code == 0, done.output
    home = tmp_path / "state" / "livecomments"
    assert f"    access_log {home}/livecomments-nginx-access.log livecomments;\n" in done.output
    assert f"pid {home}/livecomments-nginx.pid;" in done.output
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert_private(home / "livecomments-nginx-access.log")


def test_lb_config_says_in_one_line_when_it_cannot_create_a_log(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "access.log"
    done = CliRunner().invoke(lb_config, [*HOSTS, "--workdir", str(tmp_path), "--access-log", str(missing)])
    assert done.exit_code != 0
    assert done.output.strip().splitlines() == [f"Error: cannot create {missing}: No such file or directory"]


def test_haproxy_logs_paths_only_and_can_be_told_where_or_not_at_all() -> None:
    runner = CliRunner()
    default = runner.invoke(lb_config, [*HOSTS, "--format", "haproxy"])
    assert "    log stdout format raw local0 info\n" in default.output
    assert '%HM %HPO %HV' in default.output and "%r" not in default.output and "%HU" not in default.output
    syslog = runner.invoke(lb_config, [*HOSTS, "--format", "haproxy", "--access-log", "/dev/log"])
    assert "    log /dev/log local0 info\n" in syslog.output
    off = runner.invoke(lb_config, [*HOSTS, "--format", "haproxy", "--access-log", "off"])
    assert off.exit_code == 0
    assert [line for line in off.output.split("\ndefaults", 1)[0].splitlines() if "log" in line] == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lb", ["nginx", "haproxy"])
async def test_cluster_keeps_its_balancer_logs_in_its_work_dir_0640(lb: str, tmp_path: Path,
                                                                     session: aiohttp.ClientSession) -> None:
    cluster = Cluster(1, 1, "broadcast", lb=lb, policy="hash", workdir=str(tmp_path / "c"))
    await asyncio.to_thread(cluster.start)
    try:
        secret = "not-a-jwt-but-a-SECRET-in-the-query"  # streams are public here: the token is only logged
        async with session.get(f"{cluster.url}/v1/videos/in-cluster/comments", params={"access_token": secret}) as r:
            assert r.status == 200
        output = next(m for m in cluster.members if m.name == lb).log  # its stdout and stderr: HAProxy's log
        access = tmp_path / "c" / "livecomments-nginx-access.log" if lb == "nginx" else output
        logs = {output, access, tmp_path / "c" / "livecomments-nginx-error.log"} if lb == "nginx" else {output}
        await log_line(access, "/v1/videos/in-cluster/comments")
    finally:
        await asyncio.to_thread(cluster.stop)
    for log in logs:
        assert log.parent == tmp_path / "c"
        assert secret not in log.read_text(errors="replace"), log
        assert_private(log)
