"""Reports: JSON, a markdown table and PNG charts in benchmarks/results/."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
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


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write(outdir: Path, name: str, data: dict[str, Any], markdown: str) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / f"{name}.json").write_bytes(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    (outdir / f"{name}.md").write_text(markdown)


def bars(
    path: Path, title: str, labels: Sequence[str], panels: Sequence[tuple[str, Sequence[float]]]
) -> None:
    """One bar chart per panel, cases along x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(panels), 1, figsize=(max(6.0, 0.8 * len(labels)), 2.6 * len(panels)), squeeze=False
    )
    for ax, (name, values) in zip(axes[:, 0], panels, strict=True):
        ax.bar(range(len(labels)), values, color="#4a78b5")
        ax.set_ylabel(name)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
