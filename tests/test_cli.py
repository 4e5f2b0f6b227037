"""The `livecomments` command: help, config layering, refusal of impossible setups, clean SIGTERM."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from livecomments.config import ConfigError, load, options

CLI = [sys.executable, "-m", "livecomments"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30, env=env)


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
])
def test_impossible_setups_are_refused_in_one_line(args, message):
    result = run("serve", *args)
    assert result.returncode != 0
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_unknown_key_in_config_file(tmp_path):
    file = tmp_path / "lc.toml"
    file.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown option 'prot'"):
        load(str(file), environ={})


def test_bad_env_value():
    with pytest.raises(ConfigError, match="LIVECOMMENTS_PORT"):
        load(None, environ={"LIVECOMMENTS_PORT": "eighty"})


# A 60 s batch window still holds every comment at SIGTERM: shutdown must send it first.
@pytest.mark.parametrize("batching", [[], ["--batch-ms", "60000", "--no-batch-adaptive"]], ids=["default", "held"])
def test_sigterm_is_clean_and_loses_no_acknowledged_comment(spawn, tmp_path, batching):
    db = tmp_path / "term.db"
    server = spawn("--storage", f"sqlite:///{db}", "--shutdown-timeout", "10", *batching)
    acked = 0
    with httpx.Client(base_url=server.url, timeout=5) as client, \
         httpx.Client(base_url=server.url, timeout=5) as viewer_client, \
         viewer_client.stream("GET", "/v1/videos/t/stream") as stream:
        lines = stream.iter_lines()
        assert next(lines) == "retry: 2000"
        for i in range(50):
            assert client.post("/v1/videos/t/comments", json={"text": f"{i}", "author": "a"}).status_code == 201
            acked += 1
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        rest = list(lines)  # the server ends the open stream (cleanly: httpx raises on a cut one)
        assert server.proc.wait(10) == 0
        assert time.monotonic() - started < 5
    # the open stream got every acknowledged comment before the server ended it
    assert [int(line[4:]) for line in rest if line.startswith("id: ")] == list(range(1, acked + 1))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), MAX(seq) FROM comments").fetchone() == (acked, acked)


def test_serve_subprocess_answers_health_and_identity(spawn, tmp_path):
    server = spawn("--storage", f"sqlite:///{tmp_path}/h.db", "--server-id", "rt-test")
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
