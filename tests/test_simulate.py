"""The simulator: its arithmetic, the seeds' figures, its CLI, and agreement with the real benchmark."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from livecomments.benchmarks import strategies
from livecomments.benchmarks.simulate import POLICY_CHOICES, Result, analyse, place, run_all
from livecomments.benchmarks.workload import POLICIES, Workload, node_names
from livecomments.cli import main
from livecomments.ops.ring import HashRing, bounded_placement


def by_case(results: list[Result], strategy: str, policy: str) -> Result:
    return next(r for r in results if r.strategy == strategy and r.policy == policy)


def test_seed_figures() -> None:
    """1,000 servers × 1,000 topics, broadcast-all, hashed viewers: ~99.9% discarded, ~1 MB per 1 KB."""
    results = run_all(Workload(1000, 1_000_000, rate=100.0), node_names(1000), 64, 1024.0)
    broadcast = by_case(results, "broadcast", "hash")
    assert broadcast.wasted_fraction == pytest.approx(0.999, abs=0.0005)
    assert broadcast.egress_bytes_per_comment == pytest.approx(1000 * 1024)
    assert by_case(results, "dispatcher", "hash").egress_bytes_per_comment == pytest.approx(1024)


def test_strategies_move_the_same_deliveries() -> None:
    workload = Workload(videos=50, viewers=600, rate=10.0, seed=3)
    rates = workload.rate * workload.popularity
    for policy in ("round-robin", "hash"):
        placement = place(workload, policy, node_names(5))
        results = {
            s: analyse(placement, s, n, rates, 100.0)
            for s, n in (("broadcast", 0), ("partitioned", 8), ("dispatcher", 0))
        }
        per_video = analyse(placement, "partitioned", 0, rates, 100.0)
        deliveries = 10.0 * float((workload.popularity * workload.viewers_per_video).sum())
        for r in [*results.values(), per_video]:
            assert r.delivered_per_s == pytest.approx(deliveries)
        assert results["broadcast"].received_per_s == pytest.approx(5 * 10.0)
        assert per_video.wasted_fraction == results["dispatcher"].wasted_fraction == 0.0
        assert per_video.received_per_s == pytest.approx(results["dispatcher"].received_per_s)
        assert results["broadcast"].wasted_fraction >= results["partitioned"].wasted_fraction > 0
        assert 1 <= results["partitioned"].channels_max <= 8
        assert per_video.channels_mean == pytest.approx(len(placement.video) / 5)
    hashed = place(workload, "hash", node_names(5))
    assert len(np.unique(hashed.video)) == len(hashed.video), "hash puts each video on one server"


def test_cli_writes_report(tmp_path: Path) -> None:
    assert POLICY_CHOICES == POLICIES
    result = CliRunner().invoke(
        main,
        ["simulate", "--servers", "20", "--videos", "100", "--viewers", "2000", "--report", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "simulate.md").read_text()
    assert "| broadcast | hash |" in text and "99.90%" in text
    assert (tmp_path / "simulate.json").stat().st_size > 0


@pytest.mark.timeout(300)  # eight real clusters one after another: minutes on a loaded 2-core machine
async def test_agrees_with_strategy_benchmark() -> None:
    """The real cluster (redis + writer + 2 realtime servers) and the simulator on the same workload."""
    settings = strategies.Settings(
        servers=2,
        videos=12,
        viewers=48,
        rate=25.0,
        partitions=4,
        warmup=0.3,
        duration=0.7,
        policies=("hash", "bounded"),
        progress=False,
    )
    assert strategies.cluster_mode(settings) == "cluster", "the Redis broker is part of the package"
    results = await strategies.run(settings)
    assert [r["status"] for r in results] == ["ok"] * 8, [r.get("error") for r in results]
    for r in results:
        assert r["loss"] == 0 and r["disorder"] == 0, r
        workload = settings.workload()
        placement = place(workload, r["policy"], r["nodes"])
        sim = analyse(
            placement,
            r["strategy"],
            r["partitions"],
            np.asarray(r["post_counts"], dtype=np.float64),
            1.0,
        )
        assert r["wasted_fraction"] == pytest.approx(sim.wasted_fraction, rel=0.10, abs=0.01), r["label"]
        assert r["channels_mean"] == pytest.approx(sim.channels_mean, rel=0.10), r["label"]
        assert r["delivered"] == pytest.approx(sim.delivered_per_s, rel=0.10), r["label"]
        assert r["connections_per_server"] == viewers_per_server(placement).tolist(), r["label"]
    broadcast = next(r for r in results if r["strategy"] == "broadcast")
    assert broadcast["wasted_fraction"] > 0.2, "two hashed servers each drop the other's videos"


def viewers_per_server(placement) -> np.ndarray:
    return np.bincount(placement.server, weights=placement.viewers, minlength=placement.servers)


def test_bounded_caps_every_server_and_spreads_the_hot_video() -> None:
    workload = Workload(videos=300, viewers=6000, rate=10.0, zipf=1.1, seed=2)
    nodes = node_names(8)
    hashed, bounded = place(workload, "hash", nodes), place(workload, "bounded", nodes)
    assert viewers_per_server(hashed).max() > 1.5 * 750  # the hottest video's 1,229 viewers on one server
    assert viewers_per_server(bounded).max() <= math.ceil(1.25 * 750)
    servers_per_video = np.bincount(bounded.video, minlength=300)
    assert servers_per_video[0] >= 3
    small = (workload.viewers_per_video > 0) & (workload.viewers_per_video <= 10)
    assert (servers_per_video[small] == 1).mean() > 0.6, "most cold videos stay on one server"
    looser = place(workload, "bounded", nodes, balance_factor=2.0)
    assert viewers_per_server(looser).max() <= 2 * 750
    assert len(looser.video) < len(bounded.video), "a larger factor spills fewer videos"
    rates = workload.rate * workload.popularity
    for placement in (hashed, bounded):
        assert analyse(placement, "partitioned", 0, rates, 1.0).wasted_fraction == 0.0


def test_bounded_placement_follows_haproxys_slots_at_every_step() -> None:
    """ceil((n + 1) × 125 / 100) slots for n connections plus the new one, split over 4 servers."""
    ring = HashRing(node_names(4))
    placed = bounded_placement(ring, ["hot", "cold"], [0] * 40, 1.25)
    home = node_names(4).index(ring.node_for("hot"))
    assert placed[0] == home and len(set(placed)) == 4
    counts = [0] * 4
    for n, node in enumerate(placed):
        counts[node] += 1
        assert max(counts) <= math.ceil(math.ceil((n + 1) * 1.25) / 4), (n, counts)
    with pytest.raises(ValueError, match="above 1"):
        bounded_placement(ring, ["hot"], [0], 1.0)
