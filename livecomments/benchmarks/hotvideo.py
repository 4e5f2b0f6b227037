"""`livecomments bench hotvideo`: one hot video with 8,000-15,000 viewers, batching on, at rising rates.

Two questions (issue 14): where does one realtime process break with a hot video, and is a second
process per machine better run as `serve --workers 2` (SO_REUSEPORT, each worker its own hub) or as
two servers behind HAProxy (policy bounded)? It reuses the fan-out benchmark's machinery (servers,
load generator, steps, stop reasons): every server-side process (servers, workers, redis-server,
HAProxy) is pinned to core 0 and its CPU summed, the load generator to core 1. So the comparison is
per core: what each arrangement delivers at p99 < 200 ms and what it costs per delivery.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from livecomments.benchmarks.common import raise_nofile
from livecomments.benchmarks.fanout import report, run, servers
from livecomments.benchmarks.report import machine, run_line, run_mode
from livecomments.ops.procs import SBIN_PATH, RedisUnavailable, redis_binary

# Offered deliveries/s per step (comments/s = deliveries / viewers, at least 2): finer where one process
# breaks, and low enough that HAProxy, which relays every delivery, shares a sustained rate with the others.
DELIVERIES = [10_000, 20_000, 50_000, 100_000, 200_000, 300_000, 500_000, 750_000, 1_000_000, 1_500_000, 2_000_000]
VIEWERS = [8_000, 10_000, 15_000]
TARGETS = list(servers.HOTVIDEO)
QUICK_TARGETS = ["one-process", "workers-2", "haproxy-2"]
BASE = "one-process"
SEVERAL = ("workers-2", "haproxy-2")  # two processes per machine, each compared with BASE
ONE = ("one-process", "one-process-adaptive", "floor")
EXPLAIN = {
    "one-process": "one `both` process, memory broker, 20 ms batches",
    "one-process-adaptive": "the same with adaptive batching (the default: batches only hot videos)",
    "floor": "the bare uvloop fan-out (no HTTP framework, no storage) with the same 20 ms ticks: this machine's limit",
    "workers-2": "`serve --workers 2`: a supervisor and 2 workers on one port (SO_REUSEPORT), redis broker",
    "haproxy-2": "2 `both` processes behind HAProxy (lb-config, policy bounded, factor 1.25), redis broker",
}
NOTE = (
    "The two-process targets share one redis-server (the broker) and one SQLite file; posts go to "
    "either process. CPU is utime+stime from /proc of every server-side process over the window: "
    "servers, workers and supervisor, redis-server, HAProxy. The machine is shared; figures are noisy."
)


def missing(name: str) -> str | None:
    """Why a target cannot run on this machine (a tool not installed), or None."""
    kind = servers.HOTVIDEO[name][0]
    if kind in ("workers", "haproxy"):
        try:
            redis_binary()
        except RedisUnavailable as e:
            return str(e)
    if kind == "haproxy" and shutil.which("haproxy", path=SBIN_PATH) is None:
        return "haproxy is not installed: sudo apt-get install haproxy"
    return None


def does_not_fit(name: str, viewers: int, hard: int) -> str | None:
    """Each viewer is a descriptor in its server, in the load generator and two in HAProxy; the hard
    open-files limit (`ulimit -Hn`) caps every process."""
    kind, processes, _ = servers.HOTVIDEO[name]
    per_process = math.ceil(viewers / processes * (1.25 if processes > 1 else 1))  # bounded: ≤ 1.25 × mean
    need = max(viewers + 200, per_process + 1100, 2 * viewers + 200 if kind == "haproxy" else 0)
    if need <= hard:
        return None
    what = "HAProxy holds 2 descriptors per viewer" if kind == "haproxy" else "each viewer is a descriptor"
    return f"{name} skipped at {viewers:,} viewers: {what}, and the hard open-files limit is {hard:,} (`ulimit -Hn`)"


def run_all(settings: run.Settings, echo: Callable[[str], None] = print) -> dict[str, Any]:
    raise_nofile()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 1 << 30 if hard == resource.RLIM_INFINITY else hard
    for name in list(settings.targets):
        why = missing(name)
        if why:
            settings.targets.remove(name)
            settings.skipped.append(f"{name} skipped: {why}")
            echo(settings.skipped[-1])
    cores = run.cores_for(settings)
    started, results = time.time(), []
    for viewers in settings.viewers:
        rates = run.rates_for(settings, viewers, DELIVERIES)
        for name in settings.targets:
            why = does_not_fit(name, viewers, hard)
            if why:
                settings.skipped.append(why)
                echo(why)
                continue
            result = run.run_target(name, viewers, rates, settings, cores)
            result["spread"] = (result["memory"] or {}).get("served_by")
            results.append(result)
            echo(f"{report.progress_line(result)}; viewers per process: {spread(result)}")
    doc = build(results, settings, cores, time.time() - started)
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "hotvideo.json").write_text(json.dumps(doc, indent=1))
    (settings.out / "hotvideo.md").write_text(markdown(doc))
    chart(doc, settings.out / "hotvideo.png")
    echo("\n" + "\n\n".join(decision(doc)))
    echo(f"wrote {settings.out}/hotvideo.json, hotvideo.md, hotvideo.png in {time.time() - started:.0f} s")
    return doc


def spread(result: dict[str, Any]) -> str:
    """Viewers per process from the X-Served-By each viewer saw: `w1 4,010 / w2 3,990`."""
    counts = result.get("spread") or {}
    if len(counts) <= 1:
        return "one process" if counts else "–"
    named = sorted((name.rsplit("/", 1)[-1], n) for name, n in counts.items())
    mean = sum(counts.values()) / len(counts)
    return " / ".join(f"{name} {n:,}" for name, n in named) + f" (max {max(counts.values()) / mean:.2f}× mean)"


def break_point(result: dict[str, Any]) -> dict[str, Any]:
    """The best sustained step of a target and the first step it failed (None: all sustained)."""
    failed = next((s for s in result["steps"] if s["failed"]), None)
    return {
        "target": result["target"],
        "viewers": result["viewers"],
        "sustained": report.best(result),
        "failed": failed,
        "why": report.stop_reason(result),
    }


def build(
    results: list[dict[str, Any]], settings: run.Settings, cores: tuple[int | None, int | None], seconds: float
) -> dict[str, Any]:
    ratios = []
    for viewers in settings.viewers:
        for name in SEVERAL:
            got = report.ratio(results, name, BASE, viewers)
            if got:
                ratios.append({"target": name, "vs": BASE, "viewers": viewers, **got})
    return {
        "benchmark": "hotvideo",
        "run": run_mode(settings.quick),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "cpus": os.cpu_count(),
        "pinning": {"server_core": cores[0], "loadgen_core": cores[1]},
        "seconds": round(seconds),
        "settings": {"viewers": settings.viewers, "rates": settings.rates, "deliveries": DELIVERIES,
                     "duration": settings.duration, "warmup": settings.warmup, "targets": settings.targets},
        "targets": {name: EXPLAIN[name] for name in settings.targets},
        "summary": [{**report.summary_row(r), "spread": spread(r)} for r in results],
        "ratios": ratios,
        "break_points": [break_point(r) for r in results if r["target"] in ONE],
        "skipped": settings.skipped,
        "results": results,
        "note": NOTE,
    }


def markdown(doc: dict[str, Any]) -> str:
    f = report.num
    pin = doc["pinning"]
    out = [
        f"# Hot video: one process, or two per machine\n\n{run_line(doc['run'] == 'quick')}\n\n{doc['when']} · "
        f"every server-side process on core {pin['server_core']}, load generator on core {pin['loadgen_core']} · "
        f"{doc['seconds']} s\n\n{doc['note']}\n",
        *(f"- `{name}`: {text}" for name, text in doc["targets"].items()),
        "".join(f"\n{line}\n" for line in doc["skipped"]),
    ]
    for viewers in doc["settings"]["viewers"]:
        rows = [s for s in doc["summary"] if s["viewers"] == viewers]
        if not rows:
            continue
        out += [
            f"\n## {viewers:,} viewers\n",
            "| target | max deliveries/s (p99<200 ms) | at comments/s | p50 ms | p99 ms | "
            "CPU µs/delivery (all server-side processes) | viewers per process | stopped by |",
            "|---|---:|---:|---:|---:|---:|---|---|",
        ]
        out += [
            f"| {s['target']} | {f(s['max_deliveries_per_s'])} | {f(s['at_rate'], '{:g}')} | "
            f"{f(s['p50_ms'], '{:.1f}')} | {f(s['p99_ms'], '{:.1f}')} | {f(s['cpu_us_per_delivery'], '{:.2f}')} | "
            f"{s['spread']} | {s['stopped']} |"
            for s in rows
        ]
    heading = "## What this quick run shows" if doc["run"] == "quick" else "## Decision"
    out += [f"\n{heading}\n", *(p + "\n" for p in decision(doc)), cpu_table(doc)]
    out += ["## Every step\n", *report.steps_table(doc["results"])]
    return "\n".join(out) + "\n"


def cpu_table(doc: dict[str, Any]) -> str:
    """Where the server-side CPU went, per process, at each target's best step and the step that failed."""
    out = [
        "## Where the server-side CPU went\n",
        "Share of a core each process used over the window (summed, it is the server-side CPU of the steps above).\n",
        "| target | viewers | step | comments/s | deliveries/s | server-side CPU | by process |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in doc["results"]:
        labels = r.get("processes") or {}
        failed = next((s for s in r["steps"] if s["failed"]), None)
        for what, step in (("best sustained", report.best(r)), ("failed", failed)):
            if step is None or "cpu_s_by_pid" not in step:
                continue
            by = sorted(((labels.get(pid, pid), cpu / step["window_s"]) for pid, cpu in step["cpu_s_by_pid"].items()),
                        key=lambda item: -item[1])
            out.append(f"| {r['target']} | {r['viewers']:,} | {what} | {step['rate']:g} | {step['deliveries_per_s']:,} | "
                       f"{step['server_cpu_frac']:.0%} | {', '.join(f'{name} {frac:.0%}' for name, frac in by)} |")
    return "\n".join(out) + "\n"


def decision(doc: dict[str, Any]) -> list[str]:
    """The decision paragraphs, every figure taken from this run's numbers. A quick run says what it
    measured but decides nothing: its few seconds at a few hundred viewers are noise, not a verdict."""
    quick = doc["run"] == "quick"
    paragraphs = []
    for viewers in doc["settings"]["viewers"]:
        rows = {s["target"]: s for s in doc["summary"] if s["viewers"] == viewers}
        several = [name for name in SEVERAL if name in rows]
        if BASE not in rows or not several:
            continue
        got = {r["target"]: r for r in doc["ratios"] if r["viewers"] == viewers}
        costs = "; ".join(
            f"{name} used {r['ratio']:.2f}× the CPU per delivery of one process ({r['mine_us']:.2f} vs "
            f"{r['other_us']:.2f} µs at {r['rate']:g} comments/s, the highest rate both sustained)"
            if (r := got.get(name)) else
            f"{name} sustained no rate that one process sustained too ({rows[name]['stopped']})"
            for name in several
        )
        most = ", ".join(f"{name} {report.num(rows[name]['max_deliveries_per_s'])}" for name in (BASE, *several))
        spreads = "; ".join(f"{name} {rows[name]['spread']}" for name in several)
        text = (f"With {viewers:,} viewers, {costs}. Most deliveries/s sustained at p99 < 200 ms: {most}. "
                f"Viewers per process: {spreads}.")
        if quick:
            pass
        elif len(got) == 2:
            text += " " + _verdict(*sorted(got.values(), key=lambda r: r["ratio"]))
        elif len(got) == 1 and len(several) == 2:
            (name,) = got
            (other,) = set(several) - {name}
            text += f" Decision: {ADVICE[name]} ({other} sustained no rate that one process sustained too)."
        paragraphs.append(text)
    paragraphs += [_break_text(bp) for bp in doc["break_points"]]
    paragraphs.append(
        f"This machine has {doc['cpus']} cores: every server-side process shares core "
        f"{doc['pinning']['server_core']} and the load generator has core {doc['pinning']['loadgen_core']}, so "
        "these figures say what each arrangement costs on one core; what a second server core adds (scaling "
        "past one core) cannot be measured here."
    )
    if quick:
        paragraphs.append("A quick run is too short and too small to decide from: run it without --quick "
                          "for the decision.")
    return paragraphs


ADVICE = {
    "workers-2": "on one machine run `serve --workers N` (one per core); HAProxy (bounded) stays the way to "
                 "spread viewers over machines",
    "haproxy-2": "on one machine run separate servers behind HAProxy (bounded) rather than workers",
}


def _verdict(cheap: dict[str, Any], dear: dict[str, Any]) -> str:
    """Which way to run two processes on a machine, from their CPU per delivery (ratios to one process)."""
    if dear["ratio"] - cheap["ratio"] < 0.1 * cheap["ratio"]:
        return (f"{cheap['target']} and {dear['target']} are within 10% of each other, the noise of one run. "
                "Decision: equal cost, so the simpler one: `serve --workers N` needs no balancer and no extra "
                "descriptors per viewer; HAProxy stays the way to spread viewers over machines.")
    return (f"{dear['target']} costs {dear['ratio'] / cheap['ratio']:.2f}× the CPU per delivery of "
            f"{cheap['target']}. Decision: {ADVICE[cheap['target']]}.")


def _break_text(bp: dict[str, Any]) -> str:
    who, viewers, ok, failed = bp["target"], bp["viewers"], bp["sustained"], bp["failed"]
    got = (f"sustained up to {ok['deliveries_per_s']:,} deliveries/s ({ok['rate']:g} comments/s, p99 "
           f"{report.num(ok['p99_ms'], '{:.0f}')} ms)" if ok else "sustained no step")
    if failed is None:
        return f"{who} with {viewers:,} viewers {got}: every rate tried held, no break point below it."
    if bp["why"].startswith("error"):
        return f"{who} with {viewers:,} viewers {got}; then {bp['why']}."
    blame = (" The load generator was saturated at that step: the limit there is the client's, not proven "
             "the server's." if failed["loadgen_saturated"] else "")
    return (f"{who} with {viewers:,} viewers {got}; it broke at {failed['rate']:g} comments/s "
            f"({failed['expected_per_s']:,} deliveries/s offered, server-side CPU {failed['server_cpu_frac']:.0%} "
            f"of a core): {failed['failed']}.{blame}")


def chart(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    counts = [v for v in doc["settings"]["viewers"] if any(r["viewers"] == v for r in doc["results"])] or [0]
    colours = {t: plt.get_cmap("tab10")(i) for i, t in enumerate(TARGETS)}
    fig, axes = plt.subplots(1, len(counts), figsize=(max(9.0, 5.2 * len(counts)), 4.8), squeeze=False)
    for ax, viewers in zip(axes[0], counts, strict=True):
        for r in (r for r in doc["results"] if r["viewers"] == viewers and r["steps"]):
            ok = [s for s in r["steps"] if not s["failed"]]
            bad = [s for s in r["steps"] if s["failed"]]
            colour = colours.get(r["target"], "black")
            ax.plot([s["deliveries_per_s"] for s in ok], [s["p99_ms"] or math.nan for s in ok], "-o",
                    color=colour, label=r["target"])
            ax.plot([s["deliveries_per_s"] for s in bad], [s["p99_ms"] or math.nan for s in bad], "x",
                    color=colour, markersize=9)
        ax.axhline(200, color="grey", linewidth=0.8)
        ax.set(title=f"{viewers:,} viewers", xscale="log", yscale="log", xlabel="deliveries/s",
               ylabel="p99 post→viewer (ms)")
        report.plain_log_x(ax, "{:,.0f}")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    seen: dict[str, Any] = {}  # a target may be missing from some panels (skipped where it does not fit)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="upper center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, 0.93))
    fig.suptitle(f"A hot video: one process vs two per machine, all on one core ({doc['run']} run)")
    legend = "; ".join(f"{name}: {text}" for name, text in doc["targets"].items())
    legend += ". o: a step sustained, x: the step that failed; grey line: the 200 ms p99 bound."
    fig.text(0.5, 0.01, "\n".join(textwrap.wrap(legend, 170)), ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.12, 1, 0.86))
    fig.savefig(path, dpi=90)
    plt.close(fig)

