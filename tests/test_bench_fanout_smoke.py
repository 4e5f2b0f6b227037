"""The fan-out benchmark at tiny size, so it cannot rot (speeds are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.fanout import __main__ as fanout
from benchmarks.fanout.servers import PEER_PYTHON


def test_fanout_benchmark_runs_end_to_end(tmp_path: Path):
    targets = ["livecomments-adaptive", "floor-tick20"] + (["peer"] if PEER_PYTHON.exists() else [])
    code = fanout.main(
        [
            "--viewers",
            "20",
            "--rates",
            "20",
            "--duration",
            "0.3",
            "--warmup",
            "0.1",
            "--targets",
            ",".join(targets),
            "--out",
            str(tmp_path),
            "--no-pin",
        ]
    )
    assert code == 0
    doc = json.loads((tmp_path / "fanout.json").read_text())
    assert [r["target"] for r in doc["results"]] == targets
    for result in doc["results"]:
        assert result["error"] is None, result
        assert result["memory"]["viewers"] == 20
        (step,) = result["steps"]
        assert step["missing"] == 0 and step["lost_connections"] == 0, step
        assert step["deliveries_per_s"] > 0 and step["cpu_us_per_delivery"] is not None
    assert "| livecomments-adaptive | 20 |" in (tmp_path / "fanout.md").read_text()
    assert (tmp_path / "fanout.png").stat().st_size > 0
