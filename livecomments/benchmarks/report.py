"""Reports: JSON, a markdown table and PNG charts; each names its run (quick or full) and the machine."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{system}, {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def run_mode(quick: bool) -> str:
    return "quick" if quick else "full"


def run_line(quick: bool, command: str = "") -> str:
    """The first line under a report's title: figures are only comparable between full runs, and
    `command` (when given) is what made them."""
    what = "quick (tiny sizes, a smoke run: not comparable with a full run)" if quick else "full"
    made = f", `{command}`" if command else ""
    return f"Run: {what}{made}. Machine: {machine()}."


def command_line(name: str, quick: bool, storage: str = "", default: str = "all") -> str:
    """The command a report names: what to type to make it again."""
    options = (["--quick"] if quick else []) + ([f"--storage {storage}"] if storage and storage != default else [])
    return " ".join(["livecomments bench", name, *options])


def plain_number(value: float) -> str:
    """A bar's label as people write numbers: 1,713 and 0.143, never 1.71e+03."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.3f}" if abs(value) >= 0.001 or value == 0 else f"{value:.6f}"


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write(outdir: Path, name: str, data: dict[str, Any], markdown: str, quick: bool) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    data = {"run": run_mode(quick), "machine": machine(), **data}
    (outdir / f"{name}.json").write_bytes(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    (outdir / f"{name}.md").write_text(markdown)


def bars(
    path: Path, title: str, labels: Sequence[str], panels: Sequence[tuple[str, Sequence[float]]], log: bool = False
) -> None:
    """One bar chart per panel, cases along x, each bar labelled with its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(panels), 1, figsize=(max(6.0, 0.8 * len(labels)), 2.6 * len(panels)), squeeze=False
    )
    for ax, (name, values) in zip(axes[:, 0], panels, strict=True):
        drawn = ax.bar(range(len(labels)), values, color="#4a78b5")
        ax.bar_label(drawn, [plain_number(v) for v in values], fontsize=7, padding=1)
        ax.set_ylabel(name)
        if log:
            ax.set_yscale("log")
        ax.margins(y=0.15)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


Panel = tuple[str, Callable[[dict[str, Any]], float], str]  # y label, value of a case, label format


def grouped_bars(path: Path, title: str, cases: Sequence[dict[str, Any]], panels: Sequence[Panel]) -> None:
    """One panel per metric: policies along x, one bar per strategy in that strategy's own colour
    (one legend for all panels), each bar labelled with its value so a zero reads as 0, not as missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(c["policy"] for c in cases))
    labels = list(dict.fromkeys(c["label"] for c in cases))
    colours = plt.get_cmap("tab10")
    width = 0.8 / len(labels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(7.0, 2.4 * len(policies)), 2.5 * len(panels) + 1),
                             squeeze=False)
    for ax, (name, value, fmt) in zip(axes[:, 0], panels, strict=True):
        for j, label in enumerate(labels):
            xs, ys = [], []
            for i, policy in enumerate(policies):
                case = next((c for c in cases if c["label"] == label and c["policy"] == policy), None)
                if case is not None:
                    xs.append(i + (j - (len(labels) - 1) / 2) * width)
                    ys.append(value(case))
            bars = ax.bar(xs, ys, width, color=colours(j), label=label)
            ax.bar_label(bars, [fmt.format(y) for y in ys], fontsize=7, padding=1)
        ax.set_ylabel(name, fontsize=8)
        ax.set_xticks(range(len(policies)), policies)
        ax.margins(y=0.2)
    handles, names = axes[0, 0].get_legend_handles_labels()
    # The title may take two lines: the legend goes under it, the panels under the legend.
    top = 1 - 0.022 * (title.count("\n") + 1)
    fig.legend(handles, names, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, top))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, top - 0.02))
    fig.savefig(path, dpi=90)
    plt.close(fig)
