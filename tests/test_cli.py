"""The `livecomments` command: help, config layering, refusal of impossible setups, clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from livecomments.config import ConfigError
from livecomments.config_layers import load, options
from tests.fixtures.etcd import EtcdProcess
from tests.fixtures.processes import free_port, serve_args
from tests.helpers import post, status, until_status
from tests.sse import close_streams, open_stream

CLI = [sys.executable, "-m", "livecomments"]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30, env=env, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal: exit != 0, one `Error:` line last on stderr (after log lines, if it got so far), no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert lines and lines[-1].startswith("Error: ") and all(" ERROR " not in line for line in lines), result.stderr
    return lines[-1]


def test_help_explains_every_option():
    assert run("--help").returncode == 0
    out = run("serve", "--help").stdout
    for name, *_ in options():
        assert "--" + name.replace("_", "-") in out
    assert "--config" in out and "--print-config" in out


def test_print_config_layers_flags_over_env_over_file(tmp_path):
    file = tmp_path / "lc.toml"
    file.write_text('port = 7000\nmax_text = 100\nstrategy = "partitioned"\npartitions = 8\n')
    env = {"PATH": "/usr/bin:/bin", "LIVECOMMENTS_MAX_TEXT": "200", "LIVECOMMENTS_PARTITIONS": "16"}
    result = run("serve", "--config", str(file), "--print-config", "--partitions", "32", env=env)
    assert result.returncode == 0, result.stderr
    lines = set(result.stdout.splitlines())
    assert "port = 7000" in lines  # file
    assert "max_text = 200" in lines  # env over file
    assert "partitions = 32" in lines  # flag over env
    assert 'strategy = "partitioned"' in lines
    assert "max_author = 64" in lines  # default


def test_default_config_file_matches_defaults():
    assert load("config/livecomments.toml", environ={}) == load(None, environ={})


@pytest.mark.parametrize(("args", "message"), [
    (["--role", "realtime"], "in-memory broker"),
    (["--role", "writer"], "in-memory broker"),
    (["--strategy", "dispatcher"], "registry"),
    (["--port", "70000"], "out of range"),
    (["--broker", "kafka://x"], "broker"),
    # a dispatcher in role both with a registry other processes see: their pushes would all be 401
    (["--strategy", "dispatcher", "--registry", "redis://127.0.0.1:1/0"], "--cluster-secret"),
    (["--strategy", "dispatcher", "--registry", "etcd://127.0.0.1:1"], "--cluster-secret"),
    (["--strategy", "dispatcher", "--registry", "consul://x"], "registry 'consul://x': use memory://"),
    (["--registry", "consul://x"], "registry 'consul://x'"),
    (["--log-level", "verbose"], "log_level must be one of debug, info, warning, error, not 'verbose'"),
    (["--log-format", "xml"], "log_format must be one of text, json"),
    # workers are processes: what they share cannot live in one of them
    (["--workers", "2"], "2 workers cannot share the in-memory broker"),
    (["--workers", "3", "--strategy", "dispatcher", "--registry", "memory://"], "cannot share an in-memory registry"),
    (["--workers", "2", "--broker", "redis://127.0.0.1:1/0", "--internal-port", "9000"], "leave advertise_url"),
    (["--workers", "0"], "workers must be between 1 and 256, not 0"),
])
def test_impossible_setups_are_refused_in_one_line(args, message, tmp_path):
    err = one_line_error(run("serve", *args, cwd=tmp_path))
    assert message in err, err
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


def test_sqlite_url_with_two_slashes_is_refused_with_the_right_spelling(tmp_path):
    err = one_line_error(run("serve", "--storage", "sqlite://x.db", cwd=tmp_path))
    assert "sqlite:///x.db" in err, err
    assert list(tmp_path.iterdir()) == []  # it used to create a folder 'sqlite:' and a database in it


@pytest.mark.parametrize("where", ["nosuchhost.invalid", "refused"])
def test_unreachable_postgres_is_one_line_naming_the_storage(where, tmp_path):
    scheme, host = ("postgresql", "nosuchhost.invalid") if where != "refused" else ("postgres", f"127.0.0.1:{free_port()}")
    err = one_line_error(run("serve", "--storage", f"{scheme}://u:pw@{host}/db", "--port", "0", cwd=tmp_path))
    assert f"storage {scheme}://u:********@{host}/db" in err and "pw" not in err, err


def test_print_config_masks_every_secret():
    result = run("serve", "--print-config", "--strategy", "dispatcher", "--cluster-secret", "s3cret",
                 "--cursor-secret", "curs0r", "--registry", "redis://:regpass@127.0.0.1:6379/0",
                 "--broker", "redis://user:brokerpass@127.0.0.1:6379/1?password=qpass",
                 "--storage", "postgresql://app:dbpass@db.example/comments")
    assert result.returncode == 0, result.stderr
    for secret in ("s3cret", "curs0r", "regpass", "brokerpass", "qpass", "dbpass"):
        assert secret not in result.stdout, result.stdout
    lines = set(result.stdout.splitlines())
    assert 'cluster_secret = "********"' in lines and 'cursor_secret = "********"' in lines
    assert 'registry = "redis://:********@127.0.0.1:6379/0"' in lines
    assert 'broker = "redis://user:********@127.0.0.1:6379/1?password=********"' in lines
    assert 'storage = "postgresql://app:********@db.example/comments"' in lines


def shadow_extras(tmp_path: Path) -> dict[str, str]:
    """An environment where the extras' packages fail to import, as when they are not installed."""
    shadow = tmp_path / "shadow"
    for module in ("redis", "asyncpg", "uvloop"):
        (shadow / module).mkdir(parents=True)
        (shadow / module / "__init__.py").write_text(f"raise ImportError('No module named {module}')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))}


async def test_the_embedded_default_needs_no_extra(spawn, tmp_path, session):
    server = spawn(env=shadow_extras(tmp_path))  # spawn's default storage: a SQLite file
    await post(session, server.url, "plain", "hi", "a")
    assert await status(session, f"{server.url}/readyz") == 200


@pytest.mark.parametrize(("args", "extra"), [
    (["--strategy", "partitioned", "--role", "writer", "--broker", "redis://127.0.0.1:1/0"], "redis"),
    (["--strategy", "dispatcher", "--registry", "redis://127.0.0.1:1/0", "--cluster-secret", "s"], "redis"),
    (["--storage", "postgresql://u@127.0.0.1:1/db"], "postgres"),
])
def test_a_url_whose_driver_is_missing_names_the_extra(args, extra, tmp_path):
    err = one_line_error(run("serve", *args, env=shadow_extras(tmp_path), cwd=tmp_path))
    assert f"needs the {extra} extra: pip install 'livecomments[{extra}]'" in err, err


def test_unknown_key_in_config_file(tmp_path):
    file = tmp_path / "lc.toml"
    file.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown option 'prot'"):
        load(str(file), environ={})


def test_bad_env_value():
    with pytest.raises(ConfigError, match="LIVECOMMENTS_PORT"):
        load(None, environ={"LIVECOMMENTS_PORT": "eighty"})


# A 60 s batch window still holds every comment at SIGTERM: shutdown must send it first.
@pytest.mark.parametrize("batching", [[], ["--batch-mode", "fixed", "--batch-ms", "60000"]], ids=["default", "held"])
async def test_sigterm_is_clean_and_loses_no_acknowledged_comment(spawn, session, batching):
    server = spawn("--shutdown-timeout", "10", *batching)
    stream = await open_stream(session, server.url, "t")
    assert stream.opening.retry == 2000
    acked = 0
    for i in range(50):
        await post(session, server.url, "t", f"{i}", "a")
        acked += 1
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    ids = []
    while True:  # the server ends the open stream (cleanly: aiohttp raises ClientPayloadError on a cut one)
        try:
            ev = await stream.next(timeout=10)
        except EOFError:
            break
        if ev.id is not None:
            ids.append(int(ev.id))
    assert await asyncio.to_thread(server.proc.wait, 10) == 0
    assert time.monotonic() - started < 5
    # the open stream got every acknowledged comment before the server ended it
    assert ids == list(range(1, acked + 1))
    with sqlite3.connect(spawn.storage_path) as conn:
        assert conn.execute("SELECT COUNT(*), MAX(seq) FROM comments").fetchone() == (acked, acked)


def test_serve_subprocess_answers_health_and_identity(spawn):
    server = spawn("--server-id", "rt-test")
    with httpx.Client(base_url=server.url, timeout=5) as client:
        r = client.get("/healthz")
        assert r.status_code == 200 and r.headers["X-Served-By"] == "rt-test"
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").text
        for name in ("livecomments_connections", "livecomments_watched_videos", "livecomments_subscriptions",
                     "livecomments_comments_stored_total", "livecomments_broker_messages_received_total",
                     "livecomments_broker_bytes_received_total", "livecomments_comments_discarded_total",
                     "livecomments_comments_delivered_total", "livecomments_gaps_repaired_total",
                     "livecomments_slow_viewers_disconnected_total", "livecomments_dispatch_pushes_total",
                     "livecomments_dispatch_push_failures_total", "livecomments_delivery_latency_seconds_bucket"):
            assert name in metrics, name


@pytest.mark.parametrize("registry", ["etcd", "zookeeper", "redis"])
async def test_a_registry_down_at_start_is_a_degraded_start_that_heals(registry, request, tmp_path, spawn, session):
    """Issue 22 (12): etcd down at start was `cannot start: Cannot connect to host … ssl:default` and an
    `Unclosed client session` (a Redis registry: a traceback). Now, as with a Redis broker: the process starts, /readyz names the
    registry, the stream is served from storage, and the registry coming up heals it."""
    if registry == "etcd":
        server = EtcdProcess(tmp_path / "etcd")  # its ports are chosen, nothing listens yet
        url = server.url
    else:
        server = request.getfixturevalue(f"{registry}_server")
        server.stop()  # the session's ZooKeeper or the test's Redis, back on the same port below
        url = server.url
    process = spawn(*serve_args("--registry-ttl", "2", "--log-level", "warning", strategy="dispatcher",
                                transport=url))
    async with session.get(f"{process.url}/readyz") as resp:
        body = await resp.json()
        assert resp.status == 503 and body["status"] == "not_ready", body  # the detail, in the log below
    stream = await open_stream(session, process.url, "degraded")  # 200: served from storage, polling
    await post(session, process.url, "degraded", text="from storage")
    assert (await stream.next_comment(timeout=10))["text"] == "from storage"
    await asyncio.to_thread(server.start)
    await until_status(session, f"{process.url}/readyz", 200, timeout=20)
    await post(session, process.url, "degraded", text="live again")
    assert (await stream.next_comment(timeout=10))["text"] == "live again"
    close_streams(session)
    assert process.stop() == 0
    if registry == "etcd":
        server.stop()
    log = process.log_path.read_text()
    assert "Traceback" not in log and "Unclosed" not in log, log
    assert f"registry {url} unreachable" in log, log


BLOCK_REDIS = """
import sys
sys.modules["redis"] = None  # as after `pip install .` without [redis]: importing it fails
from livecomments.cli import main
main(sys.argv[1:], prog_name="livecomments")
"""


def test_a_missing_broker_driver_is_blamed_on_the_broker(tmp_path):
    """Issue 22 (13): `serve --broker redis://…` without the redis extra blamed "rate limits on redis://";
    the first thing that needs the driver is the broker, and the line must say so."""
    done = subprocess.run([sys.executable, "-c", BLOCK_REDIS, "serve", "--role", "writer", "--strategy", "partitioned",
                           "--broker", "redis://127.0.0.1:1/0"], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)
    assert one_line_error(done) == "Error: broker redis:// needs the redis extra: pip install 'livecomments[redis]'"
