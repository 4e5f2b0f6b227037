"""`livecomments bench …`: the benchmarks in benchmarks/ (from a checkout; = `python -m benchmarks`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

RESULTS = Path("benchmarks/results")


def _benchmarks() -> Any:
    try:
        import benchmarks
    except ModuleNotFoundError:
        raise click.ClickException(
            "benchmarks/ is not importable: run from the repository's top directory"
        ) from None
    return benchmarks


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@click.group()
def bench() -> None:
    """Measure the strategies, the writer and history paging; reports go to benchmarks/results/."""


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
    type=click.Choice(["round-robin", "hash"]),
    help="load-balancing policies to run (repeatable; default both)",
)
@click.option("--only", multiple=True, help="run only these strategies/labels (repeatable)")
@click.option("--quick", is_flag=True, help="tiny run for smoke tests")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS, show_default=True)
@click.option("--progress/--no-progress", default=True)
def strategies(
    quick: bool, out: Path, only: tuple[str, ...], policies: tuple[str, ...], **knobs: Any
) -> None:
    """Every strategy × load-balancing policy on a local cluster."""
    _benchmarks()
    from benchmarks import strategies as strat

    if quick:
        knobs.update(servers=2, videos=10, viewers=40, rate=20.0, warmup=0.5, duration=1.5, partitions=4)
    settings = strat.Settings(**knobs, policies=policies or ("round-robin", "hash"))
    results = _run(strat.run(settings, only))
    click.echo(strat.write_report(results, settings, out))
    if any(r["status"] != "ok" for r in results):
        click.echo("some cases failed to start: see the table", err=True)


@bench.command()
@click.option("--posters", default=64, show_default=True, help="concurrent posting clients")
@click.option("--posts", default=5000, show_default=True, help="posts per scenario")
@click.option("--quick", is_flag=True, help="tiny run for smoke tests")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS, show_default=True)
def write(posters: int, posts: int, quick: bool, out: Path) -> None:
    """Stored comments/s and POST latency: hot video vs 1,000 videos, group commit on vs off."""
    _benchmarks()
    from benchmarks import write as wb

    if quick:
        posters, posts = 8, 200
    results = _run(wb.run(posters, posts))
    click.echo(wb.write_report(results, posters, posts, out))


@bench.command()
@click.option("--comments", default=1_000_000, show_default=True, help="comments in the one video")
@click.option("--repeats", default=200, show_default=True, help="pages timed per depth and method")
@click.option("--depth", "depths", multiple=True, type=int, help="default: 10, 1000, 100000")
@click.option("--quick", is_flag=True, help="tiny run for smoke tests")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS, show_default=True)
def history(comments: int, repeats: int, depths: tuple[int, ...], quick: bool, out: Path) -> None:
    """Page time at depth 10 / 1,000 / 100,000: cursor vs offset."""
    _benchmarks()
    from benchmarks import history as hb

    if quick:
        comments, repeats, depths = 5000, 20, (10, 1000)
    results = _run(hb.run(comments, repeats, depths or (10, 1000, 100_000)))
    click.echo(hb.write_report(results, comments, repeats, out))
