"""The history benchmark: one video with 1,000,000 comments; a page deep in it, by cursor vs offset.

Rows are bulk-inserted with sqlite3 into livecomments' own schema; pages are read through
SqliteStorage.page, the call the HTTP handler makes. A cursor page is a seek on the
(video_id, seq) key; an offset page walks and throws away `depth` rows first.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from livecomments.benchmarks import report
from livecomments.benchmarks.common import percentiles
from livecomments.storage.sqlite import SqliteStorage
from livecomments.storage.sqlite_file import SCHEMA

VIDEO = "history"
PAGE = 50


def fill(path: Path, comments: int) -> float:
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(SCHEMA)
    conn.execute("PRAGMA journal_mode=WAL")
    rows: Iterator[tuple[Any, ...]] = (
        (VIDEO, seq, f"user{seq % 997}", f"comment number {seq}, a line of chat", 1.7e9 + seq / 100)
        for seq in range(1, comments + 1)
    )
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO comments (video_id, seq, author, text, created_at) VALUES (?, ?, ?, ?, ?)", rows
    )
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started


async def time_pages(
    storage: SqliteStorage, comments: int, depth: int, method: str, repeats: int
) -> list[float]:
    """Seconds per page for the page that starts `depth` comments below the newest."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        if method == "cursor":
            page = await storage.page(VIDEO, before=comments - depth + 1, limit=PAGE)
        else:
            page = await storage.page(VIDEO, limit=PAGE, offset=depth)
        times.append(time.perf_counter() - t)
        assert page[0].seq == comments - depth, "both methods must return the same page"
    return times


async def run(comments: int, repeats: int, depths: Sequence[int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lc-history-") as tmp:
        path = Path(tmp) / "history.db"
        fill_s = fill(path, comments)
        storage = await SqliteStorage.open(str(path))
        rows = []
        try:
            for depth in depths:
                for method in ("cursor", "offset"):
                    await time_pages(storage, comments, depth, method, 2)  # page cache warm, as in service
                    p50, p99, worst = percentiles(await time_pages(storage, comments, depth, method, repeats))
                    rows.append(
                        {
                            "depth": depth,
                            "method": method,
                            "p50_ms": p50 * 1e3,
                            "p99_ms": p99 * 1e3,
                            "max_ms": worst * 1e3,
                        }
                    )
        finally:
            await storage.close()
    return {"comments": comments, "fill_seconds": fill_s, "rows": rows}


def write_report(results: dict[str, Any], comments: int, repeats: int, outdir: Path, quick: bool) -> str:
    rows = [
        [f"{r['depth']:,}", r["method"], f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['max_ms']:.3f}"]
        for r in results["rows"]
    ]
    text = "\n".join(
        [
            "# History benchmark",
            "",
            f"{report.run_line(quick)} One video with {comments:,} comments in SQLite (bulk insert took "
            f"{results['fill_seconds']:.1f} s); pages of {PAGE} through `SqliteStorage.page`, "
            f"{repeats} timed per row.",
            "",
            report.table(["depth", "method", "p50 ms", "p99 ms", "max ms"], rows),
            "",
            "A cursor page costs the same at any depth (a seek on the primary key); an offset page grows "
            "with the depth, because SQLite reads and discards every skipped row.",
            "",
        ]
    )
    report.write(outdir, "history", results, text, quick)
    report.bars(
        outdir / "history.png",
        f"History page time, p50 ms (log scale)\n{report.run_mode(quick)} run, {comments:,} comments",
        [f"{r['method']} @ {r['depth']:,}" for r in results["rows"]],
        [("p50 ms", [r["p50_ms"] for r in results["rows"]])],
        log=True,  # offset at depth 100,000 is ~30× a cursor page: linear, the cursor bars vanish
    )
    return text
