"""Each benchmark at tiny size through `livecomments bench`, run as a user would: an installed copy
of the package (no checkout around it), from a directory that is not the checkout, so none of them
can rot (speeds are not asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import livecomments
from livecomments.benchmarks.report import plain_number

PACKAGE = Path(livecomments.__file__).parent
BLOCK_NUMPY = """
import sys
sys.modules["numpy"] = None  # as if the bench extra were not installed: import fails, find_spec is None
from livecomments.cli import main
main(sys.argv[1:], prog_name="livecomments")
"""
Bench = Callable[..., subprocess.CompletedProcess[str]]


def copy_package(into: Path) -> Path:
    """The package's files under `into`, as pip puts them in site-packages; `into` goes first on
    PYTHONPATH, ahead of the editable install of the checkout."""
    shutil.copytree(PACKAGE, into / "livecomments", ignore=shutil.ignore_patterns("__pycache__"))
    return into


def run_bench(cwd: Path, site: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livecomments", "bench", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "PYTHONPATH": str(site)},
    )


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    """bench(*args, timeout=…) from tmp_path, with an installed copy of the package (no checkout)."""
    site = copy_package(tmp_path / "site")

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_bench(tmp_path, site, *args, timeout=timeout)

    return run


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_strategies_runs_outside_a_checkout_into_scratch(tmp_path: Path, bench: Bench) -> None:
    out = ok(bench("strategies", "--quick", "--only", "partitioned", "--policy", "round-robin",
                   "--no-progress"))
    scratch = tmp_path / "livecomments-bench" / "scratch"  # no checkout here: the report goes beside it
    data = json.loads((scratch / "strategies.json").read_text())
    assert data["run"] == "quick" and data["machine"]
    assert [(r["label"], r["status"]) for r in data["results"]] == [
        ("partitioned-4", "ok"),
        ("partitioned-video", "ok"),
    ]
    assert all(r["loss"] == 0 and r["delivered"] > 0 for r in data["results"])
    assert "no comment was lost" in out and "Run: quick" in out
    assert (scratch / "strategies.png").stat().st_size > 0


def test_a_checkout_is_found_from_the_package_and_quick_runs_never_touch_its_results(tmp_path: Path) -> None:
    repo = copy_package(tmp_path / "repo")  # a checkout: pyproject.toml and committed reports beside the package
    (repo / "pyproject.toml").write_text("[project]\nname = 'livecomments'\n")
    results = repo / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "history.md").write_text("full-run figures")
    elsewhere = tmp_path / "elsewhere"  # run from another directory: the reports still go to the checkout
    elsewhere.mkdir()
    ok(run_bench(elsewhere, repo, "history", "--quick"))
    assert (results / "history.md").read_text() == "full-run figures"
    assert sorted(p.name for p in results.iterdir()) == ["history.md"]
    assert list(elsewhere.iterdir()) == []
    scratch = repo / "benchmarks" / "scratch"
    md = (scratch / "history.md").read_text()
    assert "Run: quick" in md and "`livecomments bench history --quick`" in md and "emulator" in md, md
    rows = json.loads((scratch / "history.json").read_text())["rows"]
    assert {(r["store"], r["depth"], r["method"]) for r in rows} == {  # DynamoDB on moto: shallower
        (store, depth, method) for store, depths in (("sqlite", (10, 1000)), ("dynamodb", (10, 500)))
        for depth in depths for method in ("cursor", "offset")
    }
    assert (scratch / "history.png").stat().st_size > 0


def test_write_smoke(tmp_path: Path, bench: Bench) -> None:
    ok(bench("write", "--quick", "--out", str(tmp_path / "out")))
    data = json.loads((tmp_path / "out" / "write.json").read_text())
    assert data["run"] == "quick" and data["skipped"] == []
    assert [r["store"] for r in data["results"]] == ["sqlite"] * 4 + ["dynamodb"] * 2  # quick: group commit on
    assert all(r["failures"] == 0 and r["stored_per_s"] > 0 for r in data["results"])
    assert [r["server"] for r in data["cpu"]] == ["bare", "livecomments"]  # CPU per post, and the ratio
    assert all(r["failures"] == 0 and r["cpu_us_per_post"] > 0 for r in data["cpu"])
    md = (tmp_path / "out" / "write.md").read_text()
    assert "`livecomments bench write --quick`" in md and "emulator" in md and "livecomments / bare" in md, md
    assert (tmp_path / "out" / "write.png").exists()
    assert [plain_number(v) for v in (1713.4, 33.04, 0.1432)] == ["1,713", "33", "0.143"]  # bar labels, not 1.71e+03


def test_fanout_without_the_peer_skips_it_with_a_note(tmp_path: Path, bench: Bench) -> None:
    proc = bench("fanout", "--viewers", "20", "--rates", "20", "--duration", "0.3", "--warmup", "0.1",
                 "--targets", "livecomments-adaptive,floor-tick20,peer", "--no-pin", "--out", str(tmp_path / "out"))
    out = ok(proc)
    assert "Traceback" not in proc.stderr
    assert [line for line in out.splitlines() if line.startswith("peer skipped")], out
    doc = json.loads((tmp_path / "out" / "fanout.json").read_text())
    assert doc["run"] == "full" and doc["skipped"][0].startswith("peer skipped")
    assert [r["target"] for r in doc["results"]] == ["livecomments-adaptive", "floor-tick20"]
    for result in doc["results"]:
        assert result["error"] is None, result
        (step,) = result["steps"]
        assert step["missing"] == 0 and step["lost_connections"] == 0, step
    md = (tmp_path / "out" / "fanout.md").read_text()
    assert "| livecomments-adaptive | 20 |" in md and "peer skipped" in md
    png = (tmp_path / "out" / "fanout.png").read_bytes()  # issue 22 (20): one panel column cut legend and note
    assert int.from_bytes(png[16:20], "big") >= 900  # PNG width in px: at least 10 in at 90 dpi


def test_fanout_target_that_does_not_start_is_a_row_not_a_crash(tmp_path: Path, bench: Bench) -> None:
    fake_peer = tmp_path / "livecomments-bench" / ".venv-peer" / "bin" / "python"  # installed, but broken
    fake_peer.parent.mkdir(parents=True)
    fake_peer.write_text("#!/bin/sh\necho 'peer: broken on purpose' >&2\nexit 3\n")
    fake_peer.chmod(0o755)
    out = ok(bench("fanout", "--viewers", "20", "--rates", "20", "--duration", "0.3", "--warmup", "0.1",
                   "--targets", "peer,floor-tick20", "--no-pin", "--out", str(tmp_path / "out")))
    doc = json.loads((tmp_path / "out" / "fanout.json").read_text())
    peer, floor = doc["results"]
    assert peer["target"] == "peer" and "did not start" in peer["error"] and "broken on purpose" in peer["error"]
    assert floor["error"] is None and floor["steps"][0]["missing"] == 0, floor
    assert "| peer | 20 |" in (tmp_path / "out" / "fanout.md").read_text(), out


def test_hotvideo_quick_checks_every_viewer_for_every_comment(tmp_path: Path, bench: Bench) -> None:
    proc = bench("hotvideo", "--quick", "--out", str(tmp_path / "out"), timeout=180)
    out = ok(proc)
    assert "Traceback" not in proc.stderr
    doc = json.loads((tmp_path / "out" / "hotvideo.json").read_text())
    assert doc["run"] == "quick" and doc["machine"] and doc["limits"]["cannot_run"] == []
    ran = [r["target"] for r in doc["results"]]
    assert doc["skipped"] == [] and sorted(ran) == ["floor", "haproxy-2", "one-process", "workers-2"], doc["skipped"]
    spread: dict[str, dict[str, int]] = {}
    for result in doc["results"]:
        assert result["error"] is None, result
        # 50 viewers read through the loop and 150 lazily, in a helper process: all 200 counted
        assert result["memory"]["sample"] == 50 and result["memory"]["lazy_processes"] == 1, result["memory"]
        assert [s["rate"] for s in result["steps"]][:1] == [50.0], result["steps"]
        for s in result["steps"]:
            assert (s["missing"], s["duplicated"], s["lost_connections"], s["cut_slow"]) == (0, 0, 0, 0), s
            assert s["p99_ms"] is not None and s["first_ms"] <= s["last_ms"], s
        spread[result["target"]] = result["spread"]
        assert sum(result["spread"].values()) == 200
    assert sorted(name.rsplit("/", 1)[1] for name in spread["workers-2"]) == ["w1", "w2"]  # X-Served-By names each
    md = (tmp_path / "out" / "hotvideo.md").read_text()
    assert md.startswith("# Hot video") and "Run: quick" in md and "first / last viewer ms" in md
    # issue 22 (20): a quick run concludes nothing, in the report or on the terminal
    assert "Where it breaks, and why" not in md and "without --quick for the figures that count" in md
    for target in ran:
        assert f"| {target} | " in md
    assert (tmp_path / "out" / "hotvideo.png").stat().st_size > 0
    assert "wrote" in out


def test_hotvideo_viewer_counts_come_from_the_open_files_limit() -> None:
    from livecomments.benchmarks import hotvideo

    names = ["one-process", "floor", "workers-2"]
    # 20,000 descriptors: one process holds 18,500 (1,024 spare, 256 for connections), two workers 36,000
    assert hotvideo.counts_for(names, [10_000, 20_000, 50_000], 20_000) == {
        "one-process": [10_000, 18_500], "floor": [10_000, 18_500], "workers-2": [10_000, 20_000, 36_000]}
    assert hotvideo.cannot_run({"one-process": [10_000, 18_500]}, [10_000, 20_000, 50_000], 20_000) == [
        "one-process: 20,000, 50,000 viewers cannot run here (each viewer is a descriptor in its one process, and the "
        "hard open-files limit is 20,000, `ulimit -Hn`); it runs 18,500 instead, the most that fits"]
    wide = hotvideo.counts_for(names, [10_000, 20_000, 50_000], 1 << 20)  # a machine with a higher limit
    assert all(counts == [10_000, 20_000, 50_000] for counts in wide.values())


def test_lazy_viewers_count_comments_split_across_reads() -> None:
    """A lazy viewer counts `event: comment` in large reads, including one a read boundary cuts in two."""
    import socket

    from livecomments.benchmarks.hotvideo_lazy import Lazy

    lazy = Lazy(port=0)
    mine, server = socket.socketpair()
    mine.setblocking(False)
    lazy.socks, lazy.counts, lazy.tails, lazy.open = [mine], [0], [b""], [True]
    frame = b"id: 1\nevent: comment\ndata: {}\n\n"
    with server:
        server.sendall(frame * 3 + frame[:10])
        lazy.sweep()
        assert lazy.count(3, 3) == {"frames": 3, "behind": 0, "ahead": 0, "missing": 0, "closed": 0}
        assert lazy.count(2, 2)["ahead"] == 1  # one more than was posted: twice
        server.sendall(frame[10:] + b": ping\n\n")
        lazy.sweep()
        assert lazy.count(5, 6) == {"frames": 4, "behind": 1, "ahead": 0, "missing": 1, "closed": 0}
    lazy.sweep()  # the server side closed
    assert lazy.count(4, 4)["closed"] == 1
    mine.close()


def test_attacks_quick_reports_every_attack_socket_closed(tmp_path: Path, bench: Bench) -> None:
    out = ok(bench("attacks", "--quick", "--out", str(tmp_path / "out"), timeout=180))
    md = (tmp_path / "out" / "attacks.md").read_text()
    assert "Run: quick" in md and "attacks with sockets left open: none" in md, md
    for attack in ("idle sockets", "trickled headers", "trickled bodies", "unsigned 4 MB pushes"):
        assert f"| {attack} |" in md, md
    assert "wrote" in out


def test_auth_cost_quick_prices_every_configuration(tmp_path: Path, bench: Bench) -> None:
    out = ok(bench("auth-cost", "--quick", "--out", str(tmp_path / "out")))
    md = (tmp_path / "out" / "auth_cost.md").read_text()
    assert "Run: quick" in md and "µs/post" in md and "one HS256 verification" in md, md
    assert "1 round of 200 posts" in md and "median of 1" not in md, md  # issue 22 (20)
    assert "wrote" in out


@pytest.mark.parametrize("command", ["strategies", "fanout", "hotvideo", "write", "history", "auth-cost", "attacks",
                                     "chaos", "all"])
def test_missing_bench_extra_is_named_in_one_line(tmp_path: Path, command: str) -> None:
    proc = subprocess.run([sys.executable, "-c", BLOCK_NUMPY, "bench", command, "--quick"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "Error: livecomments bench needs the bench extra: pip install 'livecomments[bench]' (numpy not installed)"
    ]
    assert not (tmp_path / "livecomments-bench").exists()


def test_chaos_refuses_an_unknown_strategy_before_starting_anything(tmp_path: Path, bench: Bench) -> None:
    proc = bench("chaos", "--quick", "--only", "broadcast,gossip", timeout=60)
    assert proc.returncode == 2 and "unknown ['gossip']" in proc.stderr, proc.stderr
    assert not (tmp_path / "livecomments-bench").exists()


def test_transports_quick_measures_every_row_and_loses_nothing(tmp_path: Path, bench: Bench) -> None:
    proc = bench("transports", "--quick", timeout=150)
    out = ok(proc)
    assert "Traceback" not in proc.stderr
    scratch = tmp_path / "livecomments-bench" / "scratch"  # a quick run never writes to results/
    doc = json.loads((scratch / "transports.json").read_text())
    assert doc["run"] == "quick" and doc["command"] == "livecomments bench transports --quick"
    assert doc["problems"] == [], doc["problems"]
    assert [(r["target"], r["transport"], r["viewers"]) for r in doc["results"]] == [
        ("sse", "sse", 200), ("websocket", "ws", 200), ("floor", "sse", 200)]
    for result in doc["results"]:  # every comment reached every viewer, over either transport
        assert result["error"] is None, result
        (step,) = result["steps"]
        assert step["missing"] == 0 and step["lost_connections"] == 0 and step["post_errors"] == 0, step
        assert step["deliveries_per_s"] > 0 and step["latency_samples"] > 0, step
    per_count = ["bytes_per_idle_connection", "cpu_us_per_delivery", "latency_p50_ms", "latency_p99_ms", "loadgen_cpu"]
    assert [r["key"] for r in doc["table"]] == [*per_count, "post_round_trip_p50_ms", "post_round_trip_p99_ms"]
    for row in doc["table"]:
        measured = ("sse", "websocket") if row["key"].startswith("post_") else ("sse", "websocket", "floor")
        assert all(row[label] is not None for label in measured), row
    trips = doc["round_trips"]
    assert trips["posts"] == 50 and trips["errors"] == 0 and trips["lost"] == [], trips
    md = (scratch / "transports.md").read_text()
    assert md.startswith("# SSE or WebSocket") and "Run: quick" in md and "Nothing lost" in md, md
    for row in doc["table"]:
        assert f"| {row['measure']} | " in md and f"| {row['measure']} | " in out
    assert (scratch / "transports.png").stat().st_size > 0
