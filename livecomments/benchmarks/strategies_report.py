"""The strategy benchmark's numbers: one case's summary, and the report with the simulator beside it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livecomments.benchmarks import report
from livecomments.benchmarks.common import percentiles
from livecomments.benchmarks.simulate import analyse, place
from livecomments.benchmarks.stack import Case, Settings, cluster_mode

M = "livecomments_"


@dataclass
class Observation:
    """What one case measured: /metrics of every realtime server and CPU of every process at the
    start and end of the measured window (and after the drain), plus the viewers' side."""

    before: list[dict[str, float]] = field(default_factory=list)
    after: list[dict[str, float]] = field(default_factory=list)
    final: list[dict[str, float]] = field(default_factory=list)
    cpu0: dict[str, float] = field(default_factory=dict)
    cpu1: dict[str, float] = field(default_factory=dict)
    window: float = 0.0
    latencies: list[float] = field(default_factory=list)
    posted: list[int] = field(default_factory=list)  # the video of each post the writer accepted
    failed_posts: int = 0
    expected: int = 0  # deliveries the accepted posts owe the viewers
    got: int = 0  # comment frames the viewers read
    disorder: int = 0


def summarise(case: Case, settings: Settings, nodes: list[str], o: Observation) -> dict[str, Any]:
    def total(name: str, snap: list[dict[str, float]]) -> float:
        return sum(s.get(M + name, 0.0) for s in snap)

    received, discarded = (
        total("broker_messages_received_total", o.final),
        total("comments_discarded_total", o.final),
    )
    delivered_window = total("comments_delivered_total", o.after) - total(
        "comments_delivered_total", o.before
    )
    per_server = [a.get(M + "comments_delivered_total", 0.0) - b.get(M + "comments_delivered_total", 0.0)
                  for a, b in zip(o.after, o.before, strict=True)]
    cpu = {name: o.cpu1[name] - o.cpu0.get(name, 0.0) for name in o.cpu1}
    realtime_cpu = sum(v for k, v in cpu.items() if k.startswith("rt"))
    per_k = 1000.0 / delivered_window if delivered_window else float("nan")
    subs = [s.get(M + "subscriptions", 0.0) for s in o.final]
    p50, p99, worst = percentiles(o.latencies)
    return {
        **asdict(case),
        "status": "ok",
        "servers": len(nodes),
        "mode": cluster_mode(settings),
        "posts": len(o.posted),
        "failed_posts": o.failed_posts,
        "post_counts": np.bincount(np.asarray(o.posted, dtype=np.int64), minlength=settings.videos).tolist(),
        "received": received,
        "discarded": discarded,
        "delivered": total("comments_delivered_total", o.final),
        "wasted_fraction": discarded / received if received else 0.0,
        "channels_mean": float(np.mean(subs)),
        "channels_max": float(np.max(subs)),
        "watched_mean": float(np.mean([s.get(M + "watched_videos", 0.0) for s in o.final])),
        "broker_bytes": total("broker_bytes_received_total", o.final),
        "gaps_repaired": total("gaps_repaired_total", o.final),
        "slow_disconnects": total("slow_viewers_disconnected_total", o.final),
        "deliveries_per_s": delivered_window / o.window,
        "connections_per_server": [s.get(M + "connections", 0.0) for s in o.after],
        "deliveries_per_s_per_server": [d / o.window for d in per_server],
        "cpu_s": cpu,
        "cpu_per_1k_deliveries": {
            "writer": cpu.get("writer", 0.0) * per_k,
            "realtime": realtime_cpu * per_k,
            "redis": cpu.get("redis", 0.0) * per_k,
            "driver": cpu.get("driver", 0.0) * per_k,
        },
        "latency_ms": {"p50": p50 * 1e3, "p99": p99 * 1e3, "max": worst * 1e3, "samples": len(o.latencies)},
        "expected_deliveries": o.expected,
        "viewer_frames": o.got,
        "loss": o.expected - o.got,
        "disorder": o.disorder,
        "nodes": nodes,
    }


def simulated(result: dict[str, Any], settings: Settings) -> dict[str, float]:
    """The simulator on this case's own servers, viewers and posted comments."""
    placement = place(settings.workload(), result["policy"], result["nodes"], settings.balance_factor)
    rates = np.asarray(result["post_counts"], dtype=np.float64)
    sim = analyse(placement, result["strategy"], result["partitions"], rates, 1.0)
    seconds = settings.warmup + settings.duration  # the posts were spread over the whole run
    return {
        "wasted_fraction": sim.wasted_fraction,
        "channels_mean": sim.channels_mean,
        "delivered": sim.delivered_per_s,
        "connections_mean": sim.connections_mean,
        "connections_max": sim.connections_max,
        "deliveries_per_s_mean": sim.fanout_mean / seconds,
        "deliveries_per_s_max": sim.fanout_max / seconds,
    }


def write_report(results: list[dict[str, Any]], settings: Settings, outdir: Path, quick: bool) -> str:
    rows, ok = [], [r for r in results if r["status"] == "ok"]
    for r in results:
        if r["status"] != "ok":
            rows.append([r["label"], r["policy"], f"failed: {r['error']}"] + [""] * 11)
            continue
        r["simulated"] = simulated(r, settings)
        cpu, lat, sim = r["cpu_per_1k_deliveries"], r["latency_ms"], r["simulated"]
        conns, dels = r["connections_per_server"], r["deliveries_per_s_per_server"]
        rows.append(
            [
                r["label"],
                r["policy"],
                f"{r['wasted_fraction']:.1%} (sim {sim['wasted_fraction']:.1%})",
                f"{np.mean(conns):,.0f} / {max(conns):,.0f} (sim {sim['connections_mean']:,.0f} / "
                f"{sim['connections_max']:,})",
                f"{np.mean(dels):,.0f} / {max(dels):,.0f} (sim {sim['deliveries_per_s_mean']:,.0f} / "
                f"{sim['deliveries_per_s_max']:,.0f})",
                f"{r['channels_mean']:.1f} / {r['channels_max']:.0f} "
                f"(sim {sim['channels_mean']:.1f})",
                f"{r['received']:,.0f}",
                f"{r['delivered']:,.0f}",
                f"{r['broker_bytes'] / 1e3:,.0f}",
                f"{cpu['writer']:.3f} / {cpu['realtime']:.3f} / {cpu['redis']:.3f} / {cpu['driver']:.3f}",
                f"{lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f}",
                f"{r['deliveries_per_s']:,.0f}",
                r["loss"],
                r["gaps_repaired"],
            ]
        )
    head = [
        "strategy",
        "policy",
        "wasted",
        "viewers/server mean / max",
        "deliveries/s per server mean / max",
        "channels/server mean / max",
        "received",
        "delivered",
        "broker KB in",
        "CPU s per 1k deliveries writer / realtime / redis / load generator",
        "latency ms p50 / p99 / max",
        "deliveries/s",
        "loss",
        "gaps repaired",
    ]
    lost = sum(r["loss"] for r in ok)
    s = settings
    md = [
        "# Strategy benchmark",
        "",
        f"{report.run_line(quick)} {_topology(ok[0] if ok else None, s)}",
        f"Workload: W={s.viewers:,} viewers over V={s.videos:,} videos (Zipf {s.zipf}, seed {s.seed}), "
        f"R={s.rate:g} comments/s, warm-up {s.warmup:g} s, measured {s.duration:g} s; "
        f"bounded: balance factor {s.balance_factor:g}.",
        "",
        report.table(head, rows),
        "",
        "wasted = discarded / received at the realtime servers; (sim …) is `livecomments simulate` on "
        "the same servers, viewers and posted comments (its deliveries/s spread the posts over the whole run). "
        "Bounded keeps the busiest server within the factor × the mean viewers where hash puts the hottest "
        "video's whole audience on one; its waste stays near hash's because only the hot videos spill. "
        "CPU and deliveries/s are over the measured window; "
        "counts over the whole run. Latency: the poster's send time (in the comment text) to the "
        "viewer's read.",
        "",
        f"**Loss** (expected deliveries − frames the viewers read): {lost} over {len(ok)} cases — "
        + ("no case ran." if not ok else "no comment was lost." if lost == 0 else "NOT zero, see the JSON."),
        "",
    ]
    text = "\n".join(md)
    report.write(
        outdir, "strategies", {"settings": asdict(s), "results": results}, text, quick
    )
    if ok:
        workload = (f"{s.viewers:,} viewers, {s.videos:,} videos (Zipf {s.zipf:g}), {s.rate:g} comments/s, "
                    f"{ok[0]['servers']} realtime servers ({report.run_mode(quick)} run)")
        report.grouped_bars(
            outdir / "strategies.png",
            f"Strategy × load-balancing policy\n{workload}",
            ok,
            [
                ("wasted fraction", lambda r: r["wasted_fraction"], "{:.0%}"),
                ("max viewers / server ÷ mean", lambda r: max(r["connections_per_server"])
                 / (np.mean(r["connections_per_server"]) or 1.0), "{:.2f}"),
                ("channels / server", lambda r: r["channels_mean"], "{:.1f}"),
                ("realtime CPU s / 1k deliveries", lambda r: r["cpu_per_1k_deliveries"]["realtime"], "{:.2f}"),
                ("p99 latency ms", lambda r: r["latency_ms"]["p99"], "{:.0f}"),
            ],
        )
    return text


def _topology(first: dict[str, Any] | None, settings: Settings) -> str:
    mode = first["mode"] if first else cluster_mode(settings)
    if mode == "embedded":
        return "Mode: embedded (one `--role both` process on the memory broker; no Redis)."
    servers = first["servers"] if first else settings.servers
    registry = "; the dispatcher's registry a private ZooKeeper" if settings.registry == "zk" else ""
    return f"Mode: cluster ({servers} realtime servers, 1 writer, a private redis-server{registry}, direct routing)."
