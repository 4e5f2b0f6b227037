"""Each benchmark at tiny size through its real entry point, so none of them can rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(tmp_path: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_strategies_smoke(tmp_path: Path) -> None:
    out = bench(tmp_path, "strategies", "--only", "partitioned", "--policy", "round-robin", "--no-progress")
    data = json.loads((tmp_path / "strategies.json").read_text())
    assert [(r["label"], r["status"]) for r in data["results"]] == [
        ("partitioned-4", "ok"),
        ("partitioned-video", "ok"),
    ]
    assert all(r["loss"] == 0 and r["delivered"] > 0 for r in data["results"])
    assert "no comment was lost" in out and (tmp_path / "strategies.png").stat().st_size > 0


def test_write_smoke(tmp_path: Path) -> None:
    bench(tmp_path, "write")
    results = json.loads((tmp_path / "write.json").read_text())["results"]
    assert len(results) == 4 and all(r["failures"] == 0 and r["stored_per_s"] > 0 for r in results)
    assert (tmp_path / "write.md").exists() and (tmp_path / "write.png").exists()


def test_history_smoke(tmp_path: Path) -> None:
    bench(tmp_path, "history")
    rows = json.loads((tmp_path / "history.json").read_text())["rows"]
    assert {(r["depth"], r["method"]) for r in rows} == {
        (10, "cursor"),
        (10, "offset"),
        (1000, "cursor"),
        (1000, "offset"),
    }
    assert (tmp_path / "history.md").exists() and (tmp_path / "history.png").exists()
