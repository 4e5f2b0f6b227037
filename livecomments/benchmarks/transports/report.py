"""The transports report: one table, SSE vs WebSocket (and the floor), every figure from this run."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livecomments.benchmarks.fanout import report as fanout_report
from livecomments.benchmarks.report import machine, run_line, run_mode

if TYPE_CHECKING:
    from livecomments.benchmarks.transports.run import Settings

LABELS = ("sse", "websocket", "floor")
NOTE = (
    "The same `livecomments serve` (role both, memory broker, SQLite) for SSE and WebSocket viewers of one "
    "video, a fresh one per row of viewers; the floor is the fan-out benchmark's bare asyncio.Protocol "
    "server on uvloop writing pre-built SSE bytes (no framework, no storage): the cost of the writes "
    "themselves. Bytes per idle connection: the server's RSS after the viewers connected, minus before, "
    "over the viewers. CPU: utime+stime of the server from /proc over the step, over the deliveries. "
    "Latency: post sent → comment read by a viewer (a sample of 20 viewers). The load generator (its own "
    "core) counts comments in the bytes it reads and answers the server's pings; at ≥ 90 % of its core "
    "it is marked saturated: that step may show its limit, not the server's. Post round trip: sequential "
    "posts, each answered before the next, alternating a keep-alive HTTP POST (201) and a post over an "
    "open WebSocket ({\"type\":\"post\"} → {\"type\":\"ack\"}), both clients watching the video; rate "
    "limits off (the default anonymous limit is 1 post/s with a burst of 5 per address)."
)


def _step(result: dict[str, Any]) -> dict[str, Any] | None:
    return result["steps"][0] if result["steps"] else None


Result = dict[str, Any]
Measure = Callable[[Result, Result], Any]  # (a row of viewers' result, its step) -> a value, or a note


def _rows_at(results: list[Result], viewers: int, rate: float) -> list[Result]:
    """The table's rows for one viewer count: each measure, one value per label (None: not measured),
    and a note where a figure needs one (the step failed, the load generator saturated, viewers refused)."""
    by = {r["target"]: r for r in results if r["viewers"] == viewers and (r["steps"] or r["memory"])}
    at = f"{viewers:,} viewers"

    def row(measure: str, key: str, fmt: str, value: Measure, note: Measure | None = None) -> Result:
        pairs = {label: (r, _step(r) or {}) for label, r in by.items()}
        values = {label: value(*pairs[label]) if label in pairs else None for label in LABELS}
        notes = {label: text for label, pair in pairs.items() if note and (text := note(*pair))}
        return {"measure": measure, "key": key, "viewers": viewers, "fmt": fmt, **values, "notes": notes}

    def stepped(name: str) -> Measure:
        return lambda r, s: s.get(name)

    def refused(r: Result, s: Result) -> str:
        return f"{r['refused']:,} refused" if r.get("refused") else ""

    def step_note(r: Result, s: Result) -> str:
        saturated = "load generator saturated" if s.get("loadgen_saturated") else ""
        return "; ".join(x for x in (refused(r, s), s.get("failed"), saturated) if x)

    return [
        row(f"bytes per idle connection, {at}", "bytes_per_idle_connection", "{:,.0f}",
            lambda r, s: None if r.get("refused") else (r["memory"] or {}).get("bytes_per_viewer"), refused),
        row(f"server CPU per delivery (µs), {at} × {rate:g} comments/s", "cpu_us_per_delivery", "{:.2f}",
            stepped("cpu_us_per_delivery"), step_note),
        row(f"delivery latency p50 (ms), {at}", "latency_p50_ms", "{:.1f}", stepped("p50_ms")),
        row(f"delivery latency p99 (ms), {at}", "latency_p99_ms", "{:.1f}", stepped("p99_ms")),
        row(f"load generator CPU (share of its core), {at}", "loadgen_cpu", "{:.0%}", stepped("loadgen_cpu_frac"),
            lambda r, s: "saturated" if s.get("loadgen_saturated") else ""),
    ]


def _round_trip_rows(posts: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for q in ("p50", "p99"):
        out.append({"measure": f"post round trip {q} (ms): HTTP POST (keep-alive) as SSE, post → ack over the socket",
                    "key": f"post_round_trip_{q}_ms", "viewers": None, "fmt": "{:.2f}",
                    "sse": (posts.get("http") or {}).get(f"{q}_ms"), "websocket": (posts.get("ws") or {}).get(f"{q}_ms"),
                    "floor": None, "notes": {}})
    return out


def problems(results: list[dict[str, Any]], posts: dict[str, Any]) -> list[str]:
    """Everything lost or failed: empty when every viewer got every comment and every post was answered."""
    out = []
    for r in results:
        where = f"{r['target']} with {r['viewers']:,} viewers"
        if r["error"]:
            out.append(f"{where}: {str(r['error']).strip().splitlines()[-1][:200]}")
        for s in r["steps"]:
            for key, what in (("missing", "deliveries missing"), ("lost_connections", "viewers disconnected"),
                              ("post_errors", "posts failed")):
                if s[key] > 0:  # fewer than none missing: comments posted before the step, arriving in it
                    out.append(f"{where}: {s[key]} {what}")
    if posts.get("error"):
        out.append(f"post round trip: {str(posts['error']).strip().splitlines()[-1][:200]}")
    if posts.get("errors"):
        out.append(f"post round trip: {posts['errors']} posts answered with an error")
    out += [f"post round trip: {line}" for line in posts.get("lost") or []]
    return out


def build(results: list[dict[str, Any]], posts: dict[str, Any], settings: Settings,
          cores: tuple[int | None, int | None], seconds: float) -> dict[str, Any]:
    table = [row for viewers in settings.viewers for row in _rows_at(results, viewers, settings.rate)]
    return {
        "benchmark": "transports",
        "run": run_mode(settings.quick),
        "command": settings.command,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "pinning": {"server_core": cores[0], "loadgen_core": cores[1]},
        "seconds": round(seconds),
        "settings": {"viewers": settings.viewers, "rate": settings.rate, "duration": settings.duration,
                     "warmup": settings.warmup, "round_trips": settings.round_trips, "server": settings.server},
        "table": table + _round_trip_rows(posts),
        "problems": problems(results, posts),
        "round_trips": posts,
        "results": results,
        "note": NOTE,
    }


def _cell(row: dict[str, Any], label: str) -> str:
    value, note = row[label], row["notes"].get(label)
    text = "–" if value is None else row["fmt"].format(value)
    return f"{text} ({note})" if note else text


def _ratio(row: dict[str, Any]) -> str:
    sse, ws = row["sse"], row["websocket"]
    return f"{ws / sse:.2f}×" if sse and ws is not None else "–"


def table(doc: dict[str, Any]) -> str:
    out = ["| measure | SSE | WebSocket | WebSocket ÷ SSE | floor (bare uvloop, SSE) |", "|---|---:|---:|---:|---:|"]
    out += [f"| {r['measure']} | {_cell(r, 'sse')} | {_cell(r, 'websocket')} | {_ratio(r)} | {_cell(r, 'floor')} |"
            for r in doc["table"]]
    return "\n".join(out) + "\n"


def lost_line(doc: dict[str, Any]) -> str:
    if not doc["problems"]:
        return "Nothing lost: every viewer got every comment, every post was answered."
    return "Lost or failed: " + "; ".join(doc["problems"]) + "."


def markdown(doc: dict[str, Any]) -> str:
    pin, s = doc["pinning"], doc["settings"]
    return "\n".join([
        f"# SSE or WebSocket (`livecomments bench transports`)\n\n{run_line(doc['run'] == 'quick')}\n",
        f"`{doc['command']}` · {doc['when']} · server (`{s['server']}`) on core {pin['server_core']}, load "
        f"generator on core {pin['loadgen_core']} · {doc['seconds']} s\n",
        doc["note"] + "\n",
        table(doc),
        lost_line(doc) + "\n",
        "## Every step\n",
        *fanout_report.steps_table(doc["results"]),
    ]) + "\n"


def chart(doc: dict[str, Any], path: Path) -> None:
    """Per viewer count, a bar per transport (and the floor): idle bytes, CPU per delivery, p99."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = list(dict.fromkeys(r["viewers"] for r in doc["results"]))
    panels: list[tuple[str, Measure, str]] = [
        ("bytes per idle connection", lambda r, s: (r["memory"] or {}).get("bytes_per_viewer"), "{:,.0f}"),
        ("server CPU µs per delivery", lambda r, s: s.get("cpu_us_per_delivery"), "{:.2f}"),
        ("p99 post → viewer (ms)", lambda r, s: s.get("p99_ms"), "{:.1f}"),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 2.4 * len(counts)), 8.0), squeeze=False)
    width = 0.8 / len(LABELS)
    for ax, (name, value, fmt) in zip(axes[:, 0], panels, strict=True):
        for j, label in enumerate(LABELS):
            got = {r["viewers"]: value(r, _step(r) or {}) for r in doc["results"] if r["target"] == label}
            ys = [math.nan if got.get(n) is None else float(got[n]) for n in counts]
            bars = ax.bar([i + (j - 1) * width for i in range(len(counts))], ys, width, label=label,
                          color=plt.get_cmap("tab10")(j))
            ax.bar_label(bars, ["" if math.isnan(y) else fmt.format(y) for y in ys], fontsize=7, padding=1)
        ax.set_ylabel(name, fontsize=8)
        ax.set_xticks(range(len(counts)), [f"{n:,} viewers" for n in counts])
        ax.margins(y=0.2)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(LABELS), fontsize=8)  # below the panels: no bar hidden
    settings = doc["settings"]
    fig.suptitle(f"SSE vs WebSocket on one server ({doc['run']} run): {settings['server']}, "
                 f"{settings['rate']:g} comments/s\nfloor: the bare uvloop fan-out writing SSE bytes", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def round_trip_line(posts: dict[str, Any]) -> str:
    if posts.get("error"):
        return f"post round trip: {posts['error']}"
    http, ws = posts["http"], posts["ws"]
    return (f"post round trip ({posts['posts']} sequential posts each, rate limits off): HTTP POST p50 "
            f"{http['p50_ms']:.2f} p99 {http['p99_ms']:.2f} ms; over the WebSocket p50 {ws['p50_ms']:.2f} "
            f"p99 {ws['p99_ms']:.2f} ms")


def summary(doc: dict[str, Any]) -> str:
    return f"\n{table(doc)}\n{lost_line(doc)}"
