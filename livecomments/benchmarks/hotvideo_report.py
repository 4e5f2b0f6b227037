"""The hot-video report: JSON, markdown and a chart; every sentence in it is built from the run's figures."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livecomments.benchmarks.fanout import report
from livecomments.benchmarks.fanout.report import num
from livecomments.benchmarks.report import machine, run_line, run_mode

if TYPE_CHECKING:
    from livecomments.benchmarks.fanout.run import Settings

BASE, SEVERAL = "one-process", ("workers-2", "haproxy-2")  # two processes per machine, each compared with BASE
SATURATED = 0.9  # share of the server core busy past which the server side is called saturated
SHARED = 0.3  # others' work (not the server's processes, not softirq) took more of the server core: noise
EXPLAIN = {
    "one-process": "one `both` process, memory broker, the default batching",
    "one-process-fixed20": "the same with fixed 20 ms windows (`--batch-mode fixed --batch-ms 20`)",
    "floor": "the bare uvloop fan-out (no HTTP framework, no storage) in 20 ms ticks: this machine's limit",
    "floor-unbatched": "the same floor writing each comment at once",
    "workers-2": "`serve --workers 2`: a supervisor and 2 workers on one port (SO_REUSEPORT), redis broker, "
                 "default batching; both workers share core 0",
    "haproxy-2": "2 `both` processes behind HAProxy (lb-config, policy bounded, factor 1.25), redis broker",
}
NOTE = (
    "Most viewers are lazy: helper processes read each one with one large recv every 200 ms, whatever the "
    "rate, and count its comments, so every viewer is checked for every comment (none lost, none twice) "
    "while the client stays cheap. A sample of a few hundred viewers reads through an event loop and "
    "times each comment from its post to its arrival (p50/p99), and per comment to its first and its last "
    "viewer over the sample (it joined in parts among the others, first and last included): the gap is "
    "the serial send, the server writing its viewers one after another. Server pass: created → the fan-out "
    "wrote its last viewer (window included), the server's own mean from /metrics. CPU is utime+stime from "
    "/proc of every server-side process (kernel: stime, the send path), per delivery = comments × viewers. "
    "A step whose load processes used over 90% of core 1 is the client's limit, not the server's. After "
    "the first step past p99 200 ms, up to two more show the overload. The machine is shared; figures are noisy."
)


def first_failed(result: dict[str, Any]) -> dict[str, Any] | None:
    return next((s for s in result["steps"] if s["failed"]), None)


def held(result: dict[str, Any]) -> dict[str, Any] | None:
    """The last step before the first one past the bound (a later one that passed again is noise)."""
    steps = result["steps"]
    failed = first_failed(result)
    ok = steps[: steps.index(failed)] if failed else steps
    return ok[-1] if ok else None


def why(result: dict[str, Any]) -> str:
    """What stopped a target, named: the client, viewers cut, loss, memory, server CPU or the serial send."""
    if result["error"]:
        return "error: " + str(result["error"]).splitlines()[-1][:160]
    s = first_failed(result)
    if s is None:
        return "held every rate tried"
    if s["loadgen_saturated"]:
        return f"the client's limit (load processes at {s['loadgen_cpu_frac']:.0%} of core 1)"
    reason = str(s["failed"])
    if reason == "viewers cut as slow":
        return f"{s['cut_slow']:,} viewers cut as slow (their send buffer past its bound)"
    if reason != "p99 > 200 ms" and reason != "posts not accepted at the rate":
        return reason
    first = result["steps"][0]
    if s["rss_bytes"] > 1.5 * first["rss_bytes"]:
        return f"memory: RSS {first['rss_bytes'] / 2**20:.0f} → {s['rss_bytes'] / 2**20:.0f} MB"
    other = max(0.0, s["core_busy_frac"] - s["server_cpu_frac"] - s["core_softirq_frac"])
    cpu = (f"server core {s['core_busy_frac']:.0%} busy: server processes {s['server_cpu_frac']:.0%} "
           f"({s['server_kernel_frac']:.0%} in the kernel), softirq {s['core_softirq_frac']:.0%}, other work {other:.0%}")
    if other > SHARED:
        return f"the server core was shared with other work, not this server's: noise, not a limit ({cpu})"
    if reason == "posts not accepted at the rate":
        return f"server CPU saturated: posts not accepted at the rate ({cpu})"
    if max(s["core_busy_frac"], s["server_cpu_frac"]) >= SATURATED:
        return f"server CPU saturated, windows widen ({cpu})"
    if s["serial_ms"] is None:
        return f"p99 {num(s['p99_ms'])} ms ({cpu})"
    return (f"the serial send: the last viewer gets a comment {s['serial_ms']:.0f} ms after the first "
            f"({s['serial_ms'] * 1000 / s['viewers']:.1f} µs per viewer; {cpu})")


def summary_row(r: dict[str, Any]) -> dict[str, Any]:
    b, mem, failed = held(r), r["memory"] or {}, first_failed(r)
    keys = ("rate", "deliveries_per_s", "p50_ms", "p99_ms", "first_ms", "last_ms", "server_pass_ms",
            "cpu_us_per_delivery")
    return {
        "target": r["target"], "viewers": r["viewers"], **{k: b[k] if b else None for k in keys},
        "bytes_per_viewer": mem.get("bytes_per_viewer"),
        "loadgen_cpu_max": max((s["loadgen_cpu_frac"] for s in r["steps"]), default=None),
        "breaks_at": failed["rate"] if failed else None, "why": why(r), "spread": spread(r),
    }


def spread(result: dict[str, Any]) -> str:
    """Viewers per process from the X-Served-By each viewer saw: `w1 4,010 / w2 3,990`."""
    counts = result.get("spread") or {}
    if len(counts) <= 1:
        return "one process" if counts else "–"
    named = sorted((name.rsplit("/", 1)[-1], n) for name, n in counts.items())
    return " / ".join(f"{name} {n:,}" for name, n in named)


def compare(results: list[dict[str, Any]], mine: str, other: str, viewers: int) -> dict[str, Any] | None:
    """CPU per delivery of `mine` over `other` at the highest rate both ran without losing anything."""
    def steps(name: str) -> dict[float, dict[str, Any]]:
        r = next((r for r in results if r["target"] == name and r["viewers"] == viewers), None)
        return {s["rate"]: s for s in (r or {"steps": []})["steps"]
                if s["failed"] in ("", "p99 > 200 ms") and s["cpu_us_per_delivery"]}
    a, b = steps(mine), steps(other)
    common = sorted(set(a) & set(b))
    if not common:
        return None
    rate = common[-1]
    return {"target": mine, "vs": other, "viewers": viewers, "rate": rate, "mine_us": a[rate]["cpu_us_per_delivery"],
            "other_us": b[rate]["cpu_us_per_delivery"],
            "ratio": round(a[rate]["cpu_us_per_delivery"] / b[rate]["cpu_us_per_delivery"], 3)}


def build(results: list[dict[str, Any]], settings: Settings, cores: tuple[int | None, int | None], seconds: float,
          limits: dict[str, Any]) -> dict[str, Any]:
    counts = sorted({r["viewers"] for r in results})
    ratios = [got for v in counts for name in SEVERAL if (got := compare(results, name, BASE, v))]
    return {
        "benchmark": "hotvideo", "run": run_mode(settings.quick), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(), "cpus": os.cpu_count(), "pinning": {"server_core": cores[0], "loadgen_core": cores[1]},
        "seconds": round(seconds),
        "settings": {"viewers": counts, "wanted": settings.viewers, "rates": sorted({s["rate"] for r in results
                     for s in r["steps"]}), "duration": settings.duration, "warmup": settings.warmup,
                     "targets": settings.targets},
        "limits": limits, "targets": {name: EXPLAIN[name] for name in settings.targets},
        "summary": [summary_row(r) for r in results], "ratios": ratios, "skipped": settings.skipped,
        "results": results, "note": NOTE,
    }


def markdown(doc: dict[str, Any]) -> str:
    pin, limits = doc["pinning"], doc["limits"]
    out = [
        f"# Hot video: where one process breaks, and why\n\n{run_line(doc['run'] == 'quick')}\n\n{doc['when']} · "
        f"every server-side process on core {pin['server_core']}, load processes on core {pin['loadgen_core']} · "
        f"{doc['seconds']} s\n\n{doc['note']}\n",
        *(f"- `{name}`: {text}" for name, text in doc["targets"].items()),
        "".join(f"\n{line}\n" for line in doc["skipped"]),
        f"\nHard open-files limit (`ulimit -Hn`): {limits['hard']:,}; the most viewers each target holds under it: "
        + ", ".join(f"{name} {n:,}" for name, n in limits["capacity"].items()) + ".\n",
        *(f"- {line}" for line in limits["cannot_run"]),
    ]
    for viewers in doc["settings"]["viewers"]:
        out += [
            f"\n## {viewers:,} viewers\n",
            "| target | held up to (p99 < 200 ms), comments/s | deliveries/s | p50 / p99 ms | first / last viewer ms "
            "| CPU µs/delivery | RSS/viewer | load CPU (core 1) | viewers per process | breaks at | why |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
        ]
        out += [
            f"| {s['target']} | {num(s['rate'], '{:g}')} | {num(s['deliveries_per_s'])} | "
            f"{num(s['p50_ms'])} / {num(s['p99_ms'])} | {num(s['first_ms'])} / {num(s['last_ms'])} | "
            f"{num(s['cpu_us_per_delivery'], '{:.2f}')} | {num(s['bytes_per_viewer'])} B | "
            f"{num(s['loadgen_cpu_max'], '{:.0%}')} | {s['spread']} | {num(s['breaks_at'], '{:g}/s')} | {s['why']} |"
            for s in doc["summary"] if s["viewers"] == viewers
        ]
    heading = "What this quick run shows" if doc["run"] == "quick" else "Where it breaks, and why"
    out += [f"\n## {heading}\n", *(p + "\n" for p in findings(doc)), overload_table(doc), cpu_table(doc),
            "## Every step\n", *steps_table(doc["results"])]
    return "\n".join(out) + "\n"


def overload_table(doc: dict[str, Any]) -> str:
    out = ["## Past the break: latency, not loss or memory\n",
           "From each target's first step past p99 200 ms on; RSS beside its first step's.\n",
           "| target | viewers | comments/s | p50 / p99 ms | last viewer ms | lost | duplicated | cut | RSS MB | result |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    if not any(first_failed(r) for r in doc["results"]):
        return out[0] + "\nNo step went past the bound.\n"
    for r in doc["results"]:
        failed = first_failed(r)
        for s in r["steps"][r["steps"].index(failed):] if failed else []:
            out.append(f"| {r['target']} | {r['viewers']:,} | {s['rate']:g} | {num(s['p50_ms'])} / {num(s['p99_ms'])} | "
                       f"{num(s['last_ms'])} | {s['missing']} | {s['duplicated']} | {s['cut_slow']} | "
                       f"{s['rss_bytes'] / 2**20:.0f} (first step {r['steps'][0]['rss_bytes'] / 2**20:.0f}) | "
                       f"{s['failed'] or 'ok'} |")
    return "\n".join(out) + "\n"


def cpu_table(doc: dict[str, Any]) -> str:
    """Where the server-side CPU went, per process, at each target's best step and the step that failed."""
    out = ["## Where the server-side CPU went\n",
           "Share of core 0 each process used over the window (summed: the steps' server-side CPU).\n",
           "| target | viewers | step | comments/s | server-side CPU (kernel) | server core busy (softirq) | by process |",
           "|---|---:|---|---:|---:|---:|---|"]
    for r in doc["results"]:
        labels = r.get("processes") or {}
        for what, step in (("last held", held(r)), ("first past the bound", first_failed(r))):
            if step is None:
                continue
            by = sorted(((labels.get(pid, pid), cpu / step["window_s"]) for pid, cpu in step["cpu_s_by_pid"].items()),
                        key=lambda item: -item[1])
            out.append(f"| {r['target']} | {r['viewers']:,} | {what} | {step['rate']:g} | {step['server_cpu_frac']:.0%} "
                       f"({step['server_kernel_frac']:.0%}) | {step['core_busy_frac']:.0%} ({step['core_softirq_frac']:.0%}) | "
                       f"{', '.join(f'{n} {f:.0%}' for n, f in by)} |")
    return "\n".join(out) + "\n"


def steps_table(results: list[dict[str, Any]]) -> list[str]:
    out = ["| target | viewers | comments/s | deliveries/s | p50 ms | p99 ms | first / last viewer ms | server pass ms "
           "| server CPU (kernel) | core busy (softirq) | µs/delivery | RSS MB | load CPU | lost / dup / cut | result |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        out += [f"| {r['target']} | {r['viewers']:,} | {s['rate']:g} | {s['deliveries_per_s']:,} | {num(s['p50_ms'], '{:.1f}')} "
                f"| {num(s['p99_ms'], '{:.1f}')} | {num(s['first_ms'])} / {num(s['last_ms'])} | {num(s['server_pass_ms'])} "
                f"| {s['server_cpu_frac']:.0%} ({s['server_kernel_frac']:.0%}) | {s['core_busy_frac']:.0%} "
                f"({s['core_softirq_frac']:.0%}) | {num(s['cpu_us_per_delivery'], '{:.2f}')} "
                f"| {s['rss_bytes'] / 2**20:.0f} | {s['loadgen_cpu_frac']:.0%}{' (saturated)' if s['loadgen_saturated'] else ''} "
                f"| {s['missing']} / {s['duplicated']} / {s['cut_slow']} | {s['failed'] or 'ok'} |" for s in r["steps"]]
    return out


def findings(doc: dict[str, Any]) -> list[str]:
    """The paragraphs under the tables, every figure from this run. A quick run says what it measured
    and concludes nothing: its few seconds at a few hundred viewers are noise."""
    paragraphs = [break_text(r) for r in doc["results"]]
    for r in doc["ratios"]:
        paragraphs.append(f"With {r['viewers']:,} viewers {r['target']} used {r['ratio']:.2f}× the CPU per delivery "
                          f"of {r['vs']} ({r['mine_us']:.2f} vs {r['other_us']:.2f} µs at {r['rate']:g} comments/s, "
                          "the highest rate both ran without a loss), on the same core.")
    paragraphs += [overload_text(r) for r in doc["results"] if first_failed(r) and not r["error"]]
    paragraphs += [f"Not run here: {line}." for line in doc["limits"]["cannot_run"]]
    paragraphs.append(
        f"This machine has {doc['cpus']} cores: every server-side process shares core {doc['pinning']['server_core']} "
        f"(the workers of `serve --workers 2` too) and the load processes share core {doc['pinning']['loadgen_core']}, "
        "so what a second server core adds cannot be measured here; two workers show what a second process costs "
        "and how many viewers the open-files limit lets a machine hold.")
    if doc["run"] == "quick":
        paragraphs.append("A quick run is too short and too small to conclude from: run it without --quick for the "
                          "figures that count.")
    return paragraphs


def break_text(r: dict[str, Any]) -> str:
    who, ok, failed = f"{r['target']} with {r['viewers']:,} viewers", held(r), first_failed(r)
    got = (f"held up to {ok['rate']:g} comments/s ({ok['deliveries_per_s']:,} deliveries/s, p50 {num(ok['p50_ms'])} "
           f"/ p99 {num(ok['p99_ms'])} ms; a comment reached its first viewer in {num(ok['first_ms'])} ms and its "
           f"last in {num(ok['last_ms'])} ms)" if ok else "held no rate at p99 < 200 ms")
    if r["error"] or failed is None:
        return f"{who} {got}; {why(r)}."
    return (f"{who} {got}; at {failed['rate']:g} comments/s p99 was {num(failed['p99_ms'])} ms: {why(r)}.")


def overload_text(r: dict[str, Any]) -> str:
    """What the steps from the break on show: latency up, and nothing lost, duplicated or cut, RSS flat (or not)."""
    failed = first_failed(r)
    assert failed is not None
    past = r["steps"][r["steps"].index(failed):]
    last = past[-1]
    lost, dup, cut = (sum(s[k] for s in past) for k in ("missing", "duplicated", "cut_slow"))
    shape = "degraded in latency only" if not (lost or dup or cut) else "lost what it could not deliver"
    p99 = f"p99 {num(failed['p99_ms'])} ms" + (f" → {num(last['p99_ms'])} ms at {last['rate']:g}/s" if len(past) > 1 else "")
    return (f"Past its break ({failed['rate']:g} comments/s), {r['target']} with {r['viewers']:,} viewers {shape}: "
            f"{p99}; {lost:,} comments lost, {dup:,} duplicated, {cut:,} viewers cut; RSS "
            f"{r['steps'][0]['rss_bytes'] / 2**20:.0f} MB at its first step, {last['rss_bytes'] / 2**20:.0f} MB at its last.")


def progress_line(r: dict[str, Any]) -> str:
    s = summary_row(r)
    held = f"held {s['rate']:g}/s p99 {num(s['p99_ms'])} ms" if s["rate"] else "held nothing"
    return f"{r['target']:<20} W={r['viewers']:<6} {held}; {num(s['bytes_per_viewer'])} B/viewer; {s['why']}"


def chart(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = doc["settings"]["viewers"] or [0]
    colours = {t: plt.get_cmap("tab10")(i) for i, t in enumerate(EXPLAIN)}
    fig, axes = plt.subplots(2, len(counts), figsize=(max(9.0, 4.6 * len(counts)), 8.0), squeeze=False)
    for col, viewers in enumerate(counts):
        top, bottom = axes[0][col], axes[1][col]
        for r in (r for r in doc["results"] if r["viewers"] == viewers and r["steps"]):
            colour, steps = colours[r["target"]], r["steps"]
            rates = [s["rate"] for s in steps]
            top.plot(rates, [s["p99_ms"] or float("nan") for s in steps], "-", color=colour, label=r["target"])
            top.plot(rates, [s["p50_ms"] or float("nan") for s in steps], ":", color=colour)
            for s in steps:
                top.plot(s["rate"], s["p99_ms"] or float("nan"), "x" if s["failed"] else "o", color=colour)
            bottom.plot(rates, [s["server_cpu_frac"] * 100 for s in steps], "-o", color=colour)
            bottom.plot(rates, [s["core_busy_frac"] * 100 for s in steps], "--", color=colour)
        top.axhline(200, color="grey", linewidth=0.8)
        top.set(title=f"{viewers:,} viewers", xscale="log", yscale="log", ylabel="p99 (—), p50 (···) post→viewer ms")
        bottom.set(xscale="log", xlabel="comments/s", ylabel="server processes (—), core busy (--), %", ylim=(0, 105))
        for ax in (top, bottom):
            report.plain_log_x(ax)
    seen: dict[str, Any] = {}  # a target may be missing from some panels (where it does not fit)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="upper center", ncol=5, fontsize=8, bbox_to_anchor=(0.5, 0.95))
    fig.suptitle(f"One hot video: latency and server CPU at rising rates ({doc['run']} run)")
    legend = "; ".join(f"{name}: {text}" for name, text in doc["targets"].items())
    legend += ". o: a step held, x: past the 200 ms p99 bound (grey line)."
    fig.text(0.5, 0.01, "\n".join(textwrap.wrap(legend, 60 * len(counts) + 60)), ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.1, 1, 0.9))
    fig.savefig(path, dpi=90)
    plt.close(fig)
