"""`livecomments simulate`: the strategy benchmark's arithmetic, carried to 1,000 servers.

For each strategy × load-balancing policy it places the workload's viewers (workload.py,
sampled, the same model and seed as the benchmark) and computes in steady state, per second:
what each realtime server receives (broker or push), delivers and discards, the channels it
subscribes to, and what crosses the broker. Nothing is timed: it is counting.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from livecomments.strategies.partitioned import partition_of

if TYPE_CHECKING:  # numpy loads when a simulation runs, not with every `livecomments` command
    import numpy as np
    import numpy.typing as npt

    from livecomments.benchmarks.workload import Workload

    FloatArray = npt.NDArray[np.float64]

POLICY_CHOICES = ("round-robin", "hash", "bounded")  # = workload.POLICIES (a test holds them equal)
BALANCE_FACTOR = 1.25  # = workload.BALANCE_FACTOR, HAProxy's hash-balance-factor 125
# (label, strategy, partitions): the benchmark runs the same four.
STRATEGIES = (
    ("broadcast", "broadcast", 0),
    ("partitioned-N", "partitioned", -1),  # -1: the --partitions given
    ("partitioned-video", "partitioned", 0),
    ("dispatcher", "dispatcher", 0),
)


@dataclass(frozen=True)
class Result:
    strategy: str
    policy: str
    servers: int
    received_per_s: float  # at all realtime servers together
    delivered_per_s: float
    wasted_fraction: float  # discarded / received
    channels_mean: float  # broker subscriptions per server (dispatcher: 0, it registers videos)
    channels_max: int
    watched_mean: float  # videos with a local viewer, per server
    broker_msgs_per_s: float  # publishes + deliveries to subscribers (dispatcher: HTTP pushes)
    broker_bytes_per_s: float
    egress_bytes_per_comment: float  # what one comment costs leaving the broker (or writer)
    fanout_mean: float  # deliveries/s per server
    fanout_max: float
    connections_mean: float  # viewers per server
    connections_max: int


@dataclass(frozen=True)
class Placement:
    """The distinct (server, video) pairs with a viewer, and how many viewers each has."""

    servers: int
    server: npt.NDArray[np.int64]
    video: npt.NDArray[np.int64]
    viewers: npt.NDArray[np.int64]


def place(workload: Workload, policy: str, nodes: Sequence[str], balance_factor: float = BALANCE_FACTOR) -> Placement:
    import numpy as np

    key = workload.route(policy, nodes, balance_factor) * workload.videos + workload.viewer_videos
    pairs, counts = np.unique(key, return_counts=True)
    return Placement(len(nodes), pairs // workload.videos, pairs % workload.videos, counts)


def analyse(
    placement: Placement,
    strategy: str,
    partitions: int,
    rates: FloatArray,
    comment_bytes: float,
    label: str = "",
    policy: str = "",
) -> Result:
    """rates[v]: comments/s on video v (R × popularity, or the counts a benchmark posted)."""
    import numpy as np

    from livecomments.benchmarks.workload import video_id

    k, s, v = placement.servers, placement.server, placement.video
    total = float(rates.sum())
    useful = np.bincount(s, weights=rates[v], minlength=k)
    delivered = np.bincount(s, weights=rates[v] * placement.viewers, minlength=k)
    watched = np.bincount(s, minlength=k)
    connections = np.bincount(s, weights=placement.viewers, minlength=k)
    if strategy == "broadcast":
        received, channels = np.full(k, total), np.ones(k, dtype=np.int64)
    elif strategy == "partitioned" and partitions > 0:
        part = np.array([partition_of(video_id(i), partitions) for i in range(len(rates))], dtype=np.int64)
        part_rate = np.bincount(part, weights=rates, minlength=partitions)
        subs = np.unique(s * partitions + part[v])
        received = np.bincount(subs // partitions, weights=part_rate[subs % partitions], minlength=k)
        channels = np.bincount(subs // partitions, minlength=k)
    elif strategy in ("partitioned", "dispatcher"):  # exact interest: only watched videos arrive
        received = useful
        channels = watched if strategy == "partitioned" else np.zeros(k, dtype=np.int64)
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    got = float(received.sum())
    publishes = 0.0 if strategy == "dispatcher" else total
    return Result(
        strategy=label or strategy,
        policy=policy,
        servers=k,
        received_per_s=got,
        delivered_per_s=float(delivered.sum()),
        wasted_fraction=(got - float(useful.sum())) / got if got else 0.0,
        channels_mean=float(channels.mean()),
        channels_max=int(channels.max()),
        watched_mean=float(watched.mean()),
        broker_msgs_per_s=publishes + got,
        broker_bytes_per_s=(publishes + got) * comment_bytes,
        egress_bytes_per_comment=got / total * comment_bytes if total else 0.0,
        fanout_mean=float(delivered.mean()),
        fanout_max=float(delivered.max()),
        connections_mean=float(connections.mean()),
        connections_max=int(connections.max()),
    )


def run_all(
    workload: Workload,
    nodes: Sequence[str],
    partitions: int,
    comment_bytes: float,
    rates: FloatArray | None = None,
    policies: Sequence[str] = POLICY_CHOICES,
    balance_factor: float = BALANCE_FACTOR,
) -> list[Result]:
    rates = workload.rate * workload.popularity if rates is None else rates
    results = []
    for policy in policies:
        placement = place(workload, policy, nodes, balance_factor)
        for label, strategy, n in STRATEGIES:
            n = partitions if n < 0 else n
            name = f"partitioned-{n}" if label == "partitioned-N" else label
            results.append(analyse(placement, strategy, n, rates, comment_bytes, name, policy))
    return results


def markdown(results: Sequence[Result], title: str) -> str:
    head = (
        "strategy",
        "policy",
        "received/s",
        "delivered/s",
        "wasted",
        "channels mean/max",
        "broker msgs/s",
        "broker MB/s",
        "egress per comment",
        "fan-out/server mean/max",
        "viewers/server mean/max",
    )
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lines.append(
            f"| {r.strategy} | {r.policy} | {r.received_per_s:,.0f} | {r.delivered_per_s:,.0f} | "
            f"{r.wasted_fraction:.2%} | {r.channels_mean:,.1f} / {r.channels_max:,} | "
            f"{r.broker_msgs_per_s:,.0f} | {r.broker_bytes_per_s / 1e6:,.2f} | "
            f"{_size(r.egress_bytes_per_comment)} | {r.fanout_mean:,.0f} / {r.fanout_max:,.0f} | "
            f"{r.connections_mean:,.0f} / {r.connections_max:,} |"
        )
    return "\n".join(lines) + "\n"


def _size(n: float) -> str:
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


READING = """How to read it: under round-robin every server ends up watching thousands of videos, so
a shared channel (broadcast, or N partitions) arrives almost everywhere and only exact interest
(one channel per video, or the dispatcher) removes the waste; under hash routing a video lives
on one server, so waste disappears with exact interest and the broker carries each comment
about once, but the max fan-out column is the hottest video's whole audience on one server.
Bounded (consistent hashing with bounded loads, HAProxy's hash-balance-factor) caps every server
at the balance factor × the mean viewers (the viewers/server max column): the hot video spills over
the next servers on the ring, each of which then needs its comments too. Most cold videos stay on
one server, but the servers a hot video fills reach the bound and spill their own videos in turn,
so exact-interest strategies receive more than under hash; a larger factor spills less."""

SEED_TEXT = """The seeds' figures: 1,000 realtime servers, 1,000 live videos (topics), broadcast-all.
With viewers hashed by video, a video's viewers sit on about one server, so each server can use
about 1/1,000 of what it receives: ~99.9% is discarded, and each 1 KB comment leaves the broker
1,000 times, ~1 MB of egress. The other rows show what partitioning, hashing and dispatching do."""


@click.command()
@click.option("--servers", default=1000, show_default=True, help="realtime servers K")
@click.option("--videos", default=100_000, show_default=True, help="live videos V")
@click.option("--viewers", default=10_000_000, show_default=True, help="viewers W")
@click.option("--rate", default=10_000.0, show_default=True, help="comments/s, all videos together")
@click.option("--partitions", default=64, show_default=True, help="channels of partitioned-N")
@click.option("--zipf", default=1.0, show_default=True, help="Zipf exponent of video popularity")
@click.option("--seed", default=1, show_default=True, help="workload seed (same model as the benchmark)")
@click.option("--comment-bytes", default=1024.0, show_default=True, help="bytes of one comment on the broker")
@click.option("--policy", "policies", multiple=True, type=click.Choice(POLICY_CHOICES), help="default: all")
@click.option("--balance-factor", default=BALANCE_FACTOR, show_default=True, type=click.FloatRange(min=1.0, min_open=True),
              help="bounded: no server above this × the mean viewers")
@click.option(
    "--seed-figures/--no-seed-figures",
    default=True,
    show_default=True,
    help="also run the seeds' scenario (1,000 servers × 1,000 topics)",
)
@click.option("--report", type=click.Path(file_okay=False), help="write simulate.md and simulate.json here")
def simulate(
    servers: int,
    videos: int,
    viewers: int,
    rate: float,
    partitions: int,
    zipf: float,
    seed: int,
    comment_bytes: float,
    policies: tuple[str, ...],
    balance_factor: float,
    seed_figures: bool,
    report: str | None,
) -> None:
    """Wasted fraction, channels per server, broker traffic and fan-out at any scale."""
    started = time.monotonic()
    try:
        from livecomments.benchmarks.workload import Workload, node_names
    except ModuleNotFoundError as e:
        raise click.ClickException(
            f"the simulator needs {e.name}: pip install 'livecomments[bench]'"
        ) from None

    workload = Workload(videos, viewers, rate, zipf, seed)
    nodes = node_names(servers)
    results = run_all(workload, nodes, partitions, comment_bytes, policies=policies or POLICY_CHOICES,
                      balance_factor=balance_factor)
    title = f"K={servers:,} servers, V={videos:,} videos, W={viewers:,} viewers, R={rate:,.0f}/s, zipf {zipf}"
    text = ["# Simulation", "", markdown(results, title), READING, ""]
    out = {"workload": asdict(workload), "servers": servers, "balance_factor": balance_factor,
           "results": [asdict(r) for r in results]}
    if seed_figures:
        seeds = Workload(1000, 1_000_000, rate, zipf, seed)
        seed_results = run_all(seeds, node_names(1000), partitions, 1024.0, policies=("round-robin", "hash"))
        text += [SEED_TEXT, "", markdown(seed_results, "K=1,000, V=1,000, W=1,000,000, 1 KB comments")]
        out["seed_figures"] = [asdict(r) for r in seed_results]
    text.append(f"_computed in {time.monotonic() - started:.1f} s_\n")
    click.echo("\n".join(text))
    if report:
        path = Path(report)
        path.mkdir(parents=True, exist_ok=True)
        (path / "simulate.md").write_text("\n".join(text))
        (path / "simulate.json").write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
        click.echo(f"wrote {path / 'simulate.md'} and {path / 'simulate.json'}", err=True)
    sys.stdout.flush()
