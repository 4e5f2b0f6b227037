"""`livecomments bench …`: every benchmark, from the installed package (livecomments/benchmarks/).

A full run updates the committed reports (benchmarks/results/ of the checkout the package runs
from, common.out_dir); --quick runs tiny sizes into a git-ignored scratch folder, so a smoke run
never replaces real figures. `bench chaos` is the fault suite (chaos/).
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from livecomments.benchmarks.report import command_line  # orjson only: no bench extra needed

T = TypeVar("T")
# What the benchmarks import beyond the base install: the bench extra.
BENCH_MODULES = ("numpy", "matplotlib", "tqdm", "uvloop")
MISSING_EXTRA = "livecomments bench needs the bench extra: pip install 'livecomments[bench]'"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    import uvloop

    return uvloop.run(coro)


_out_option = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                           help="report directory [default: benchmarks/results/, or benchmarks/scratch/ with --quick]")
_quick_option = click.option("--quick", is_flag=True, help="tiny sizes, a smoke run; writes to the scratch folder")


@click.group()
def bench() -> None:
    """Measure strategies, fan-out, a hot video, SSE vs WebSocket, writes, history paging, the cost of identity, attacks;
    `bench all --quick` is the smoke suite; `bench chaos` is the fault suite."""
    missing = [name for name in BENCH_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise click.ClickException(f"{MISSING_EXTRA} ({', '.join(missing)} not installed)")
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C: every `finally` stops the servers it started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


@bench.command()
@click.option("--servers", "-k", default=4, show_default=True, help="realtime servers K (cluster mode)")
@click.option("--videos", "-v", default=200, show_default=True, help="videos V")
@click.option("--viewers", "-w", default=2000, show_default=True, help="SSE viewers W")
@click.option("--rate", "-r", default=100.0, show_default=True, help="comments/s in total")
@click.option("--zipf", default=1.0, show_default=True, help="Zipf exponent of popularity")
@click.option("--seed", default=1, show_default=True, help="workload seed")
@click.option("--partitions", default=64, show_default=True, help="channels of the partitioned-N case")
@click.option("--warmup", default=3.0, show_default=True, help="seconds before measuring")
@click.option("--duration", default=15.0, show_default=True, help="measured seconds per case")
@click.option(
    "--mode",
    type=click.Choice(["auto", "cluster", "embedded"]),
    default="auto",
    show_default=True,
    help="cluster: redis + writer + K realtime; embedded: one `both` process (memory broker)",
)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(["round-robin", "hash", "bounded"]),
    help="load-balancing policies to run (repeatable; default all)",
)
@click.option("--balance-factor", default=1.25, show_default=True, type=click.FloatRange(min=1.0, min_open=True),
              help="bounded: no server above this × the mean viewers")
@click.option("--only", multiple=True, help="run only these strategies/labels (repeatable)")
@click.option("--registry", type=click.Choice(["redis", "zk"]), default="redis", show_default=True,
              help="the dispatcher's registry: the broker's redis-server, or a ZooKeeper of its own")
@_quick_option
@_out_option
@click.option("--progress/--no-progress", default=None, help="progress bars [default: on a terminal]")
def strategies(
    quick: bool, out: Path | None, only: tuple[str, ...], policies: tuple[str, ...], progress: bool | None,
    **knobs: Any,
) -> None:
    """Every strategy × load-balancing policy on a local cluster."""
    from livecomments.benchmarks import strategies as strat
    from livecomments.benchmarks.common import out_dir

    knobs["progress"] = sys.stderr.isatty() if progress is None else progress  # a log gets no bar redraws

    if quick:
        knobs.update(servers=2, videos=10, viewers=40, rate=20.0, warmup=0.5, duration=1.5, partitions=4)
    if policies:
        knobs["policies"] = policies
    settings = strat.Settings(**knobs)
    results = _run(strat.run(settings, only))
    click.echo(strat.write_report(results, settings, out_dir(quick, out), quick))
    if any(r["status"] != "ok" for r in results):
        raise click.ClickException("some cases failed to start: see the table")


STORES = {"all": ("sqlite", "dynamodb"), "sqlite": ("sqlite",), "dynamodb": ("dynamodb",)}  # write and history
_storage_option = click.option("--storage", "stores", type=click.Choice(list(STORES)), default="all", show_default=True)


@bench.command()
@click.option("--posters", default=64, show_default=True, help="concurrent posting clients")
@click.option("--posts", default=5000, show_default=True, help="posts per scenario (DynamoDB: at most 16 posters, 400 posts)")
@_storage_option
@_quick_option
@_out_option
def write(posters: int, posts: int, stores: str, quick: bool, out: Path | None) -> None:
    """Stored comments/s and POST latency: hot video vs 1,000 videos, group commit on/off; SQLite, DynamoDB (moto)."""
    from livecomments.benchmarks import write as wb
    from livecomments.benchmarks.common import out_dir

    posters, posts = (8, 200) if quick else (posters, posts)
    results = _run(wb.run(posters, posts, STORES[stores], quick))
    click.echo(wb.write_report(results, posts, out_dir(quick, out), quick, command_line("write", quick, stores)))


@bench.command()
@click.option("--comments", default=1_000_000, show_default=True, help="comments in the one SQLite video")
@click.option("--repeats", default=200, show_default=True, help="SQLite pages timed per depth and method")
@click.option("--depth", "depths", multiple=True, type=int, help="SQLite depths; default: 10, 1000, 100000")
@_storage_option
@_quick_option
@_out_option
def history(comments: int, repeats: int, depths: tuple[int, ...], stores: str, quick: bool, out: Path | None) -> None:
    """Page time by depth: cursor vs offset, on SQLite (10 / 1,000 / 100,000) and DynamoDB (moto: 10 / 100 / 500)."""
    from livecomments.benchmarks import history as hb
    from livecomments.benchmarks.common import out_dir

    comments, repeats, depths = (5000, 20, (10, 1000)) if quick else (comments, repeats, depths)
    results = _run(hb.run(comments, repeats, depths or (10, 1000, 100_000), STORES[stores], quick))
    click.echo(hb.write_report(results, out_dir(quick, out), quick, command_line("history", quick, stores)))


def _numbers(kind: Callable[[str], T]) -> Callable[[str | None], list[T] | None]:
    def parse(text: str | None) -> list[T] | None:
        try:
            return [kind(x) for x in text.split(",") if x] if text else None
        except ValueError:
            raise click.BadParameter(f"{text!r}: expected comma-separated numbers") from None

    return parse


@bench.command()
@click.option("--viewers", default="1000,5000,10000", show_default=True, help="viewer counts W, comma-separated")
@click.option("--rates", default=None, help="comments/s steps, comma-separated [default: 5k…2M deliveries/s over W]")
@click.option("--duration", default=1.0, show_default=True, help="measured seconds per step")
@click.option("--warmup", default=0.3, show_default=True, help="seconds at each rate before measuring")
@click.option("--targets", default=None, help="servers to run, comma-separated [default: all]")
@click.option("--setup-peer", is_flag=True, help="first install the peer stack into its own venv")
@click.option("--pin/--no-pin", default=True, show_default=True, help="server on core 0, load generator on core 1")
@_quick_option
@_out_option
def fanout(viewers: str, rates: str | None, duration: float, warmup: float, targets: str | None,
           setup_peer: bool, pin: bool, quick: bool, out: Path | None) -> None:
    """One realtime process, one hot video: livecomments vs the floor (a minimal asyncio fan-out, the
    cost of the work itself) vs the peer (Starlette + sse-starlette + broadcaster), at rising rates."""
    from livecomments.benchmarks.common import out_dir
    from livecomments.benchmarks.fanout import run, servers

    chosen = targets.split(",") if targets else list(servers.TARGETS)
    unknown = sorted(set(chosen) - set(servers.TARGETS))
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; choose from {', '.join(servers.TARGETS)}", param_hint="--targets")
    settings = run.Settings(out_dir(quick, out), _numbers(int)(viewers) or [1000], _numbers(float)(rates),
                            duration, warmup, chosen, quick, pin)
    if quick:
        settings.viewers, settings.duration, settings.warmup = [200], 0.5, 0.2
        settings.rates = settings.rates or [50.0, 500.0]
    if setup_peer:
        servers.setup_peer()
    run.run(settings, click.echo)


@bench.command()
@click.option("--viewers", default="10000,20000,50000", show_default=True,
              help="viewer counts W, comma-separated; a count a target cannot hold under `ulimit -Hn` runs at the "
              "most it can")
@click.option("--rates", default=None, help="comments/s steps, comma-separated [default: 2…1000]")
@click.option("--duration", default=2.0, show_default=True, help="measured seconds per step")
@click.option("--warmup", default=0.5, show_default=True, help="seconds at each rate before measuring")
@click.option("--targets", default=None,
              help="one-process, one-process-fixed20, floor, floor-unbatched, workers-2, haproxy-2 (comma-separated) "
              "[default: all but haproxy-2; quick: one-process, floor, workers-2, haproxy-2]")
@click.option("--pin/--no-pin", default=True, show_default=True,
              help="every server-side process on core 0, the load processes on core 1")
@_quick_option
@_out_option
def hotvideo(viewers: str, rates: str | None, duration: float, warmup: float, targets: str | None, pin: bool,
             quick: bool, out: Path | None) -> None:
    """One hot video at 10,000-50,000 viewers and rising rates: where one process breaks and why (server CPU,
    the serial send, memory, viewers cut, the client), beside the floor and `serve --workers 2`."""
    from livecomments.benchmarks import hotvideo as hv
    from livecomments.benchmarks.common import out_dir
    from livecomments.benchmarks.fanout import run

    chosen = targets.split(",") if targets else list(hv.QUICK_TARGETS if quick else hv.DEFAULT_TARGETS)
    unknown = sorted(set(chosen) - set(hv.TARGETS))
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; choose from {', '.join(hv.TARGETS)}", param_hint="--targets")
    settings = run.Settings(out_dir(quick, out), _numbers(int)(viewers) or hv.VIEWERS, _numbers(float)(rates),
                            duration, warmup, chosen, quick, pin)
    if quick:
        settings.viewers, settings.duration, settings.warmup = [200], 0.5, 0.2
        settings.rates = settings.rates or [50.0, 500.0]
    hv.run_all(settings, click.echo)


@bench.command()
@click.option("--viewers", default="1000,5000,10000", show_default=True, help="viewer counts, comma-separated")
@click.option("--rate", default=10.0, show_default=True, help="comments/s at every viewer count")
@click.option("--duration", default=2.0, show_default=True, help="measured seconds per step")
@click.option("--warmup", default=0.5, show_default=True, help="seconds at the rate before measuring")
@click.option("--round-trips", default=1000, show_default=True, help="sequential posts per transport")
@click.option("--server", type=click.Choice(["livecomments-immediate", "livecomments-paced", "livecomments-batch20",
                                                "livecomments-adaptive"]),
              default="livecomments-immediate", show_default=True, help="the server's batching (fanout's targets)")
@click.option("--pin/--no-pin", default=True, show_default=True, help="server on core 0, load generator on core 1")
@_quick_option
@_out_option
def transports(viewers: str, quick: bool, out: Path | None, **knobs: Any) -> None:
    """SSE vs WebSocket viewers of one server, and the bare-uvloop floor: bytes per idle connection, CPU per
    delivery and latency at a fixed rate, and the post round trip (HTTP POST vs a post over the socket)."""
    from livecomments.benchmarks.common import out_dir
    from livecomments.benchmarks.transports import run

    settings = run.Settings(out_dir(quick, out), _numbers(int)(viewers) or [1000], quick=quick,
                            command=run.command_line(quick), **knobs)
    if quick:
        settings.viewers, settings.rate, settings.duration, settings.warmup, settings.round_trips = [200], 20.0, 0.5, 0.2, 50
    run.run(settings, click.echo)


@bench.command()
@_quick_option
@_out_option
def attacks(quick: bool, out: Path | None) -> None:
    """One process attacked as an anonymous client would (idle, trickled and oversized connections,
    unsigned pushes, a stream flood) while a legitimate client checks it is still answered."""
    from livecomments.benchmarks import attacks as ab
    from livecomments.benchmarks.common import out_dir

    text, all_closed = ab.write_report(_run(ab.run(quick)), out_dir(quick, out), quick)
    click.echo(text)
    if not all_closed:
        raise click.ClickException("the server left some attack sockets open: see the table")


@bench.command("auth-cost")
@click.option("--posts", default=4000, show_default=True, help="posts per configuration per round")
@click.option("--rounds", default=3, show_default=True, help="rounds, interleaving the configurations")
@click.option("--concurrency", default=16, show_default=True, help="posts in flight")
@_quick_option
@_out_option
def auth_cost(posts: int, rounds: int, concurrency: int, quick: bool, out: Path | None) -> None:
    """Server CPU per post with and without tokens and rate limits (in-process and Redis)."""
    from livecomments.benchmarks import auth_cost as ac
    from livecomments.benchmarks.common import out_dir

    if quick:
        posts, rounds = 200, 1
    setups = ac.measure_all(posts, rounds, concurrency)
    click.echo(ac.write_report(setups, posts, rounds, concurrency, out_dir(quick, out), quick))


@bench.command()
@click.option("--only", multiple=True, help="strategies to run (repeatable or comma-separated) [default: all four]")
@click.option("--storage", type=click.Choice(["postgresql", "dynamodb"]), default="postgresql", show_default=True,
              help="dynamodb: a local moto server, report chaos-dynamodb.md")
@_quick_option
@_out_option
def chaos(only: tuple[str, ...], storage: str, quick: bool, out: Path | None) -> None:
    """The fault suite: a writer and two realtime processes per strategy on PostgreSQL (or DynamoDB) broken under
    load; every viewer checked against storage (needs redis-server, etcd, and PostgreSQL or moto)."""
    from livecomments.benchmarks.chaos import suite
    from livecomments.benchmarks.common import out_dir
    from livecomments.ops.services import ServiceUnavailable

    labels = [label for item in only for label in item.split(",") if label] or suite.LABELS
    if unknown := sorted(set(labels) - set(suite.LABELS)):
        raise click.BadParameter(f"unknown {unknown}; choose from {', '.join(suite.LABELS)}", param_hint="--only")
    try:
        _, passed = _run(suite.run(labels, quick, out_dir(quick, out), click.echo, storage))
    except ServiceUnavailable as e:  # PostgreSQL or moto not installed, or it did not start
        raise click.ClickException(str(e)) from None
    if not passed:
        raise click.ClickException("the fault suite found faults: see the table")


@bench.command("all")
@_quick_option
@_out_option
@click.pass_context
def all_benchmarks(ctx: click.Context, quick: bool, out: Path | None) -> None:
    """Every benchmark in turn (`make bench` runs it with --quick: a few minutes)."""
    for command in (strategies, fanout, hotvideo, transports, write, history, auth_cost, attacks):
        click.echo(f"== livecomments bench {command.name}{' --quick' if quick else ''}", err=True)
        ctx.invoke(command, quick=quick, out=out)  # click fills in the command's other defaults
