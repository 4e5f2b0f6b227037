"""The history benchmark: one video's page deep in its history, by cursor vs offset, on SQLite
(1,000,000 comments) and on DynamoDB (a local moto server: an emulator, see below).

SQLite rows are bulk-inserted with sqlite3 into livecomments' own schema, DynamoDB items with
BatchWriteItem into the storage's own tables; pages are read through the storage's `page`, the
call the HTTP handler makes. A cursor page is a seek on the (video_id, seq) key; an offset page
reads and throws away `depth` entries first, on either store (DynamoDB's Query has no offset:
the skipped items are read, and on AWS paid for, then dropped).

moto keeps a table in Python dicts and walks a whole partition for every Query, so its pages
are slow and a cursor page grows with the partition (not with the depth): its video is 2,000
comments and its deepest offset 500 (~0.7 ms per skipped item: deeper nears the storage's 3 s
read timeout on a busy machine). Its
figures are the emulator's cost plus ours, never DynamoDB's; what carries over is the shape:
cursor flat in depth, offset growing with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from livecomments.benchmarks import report
from livecomments.benchmarks.common import percentiles
from livecomments.storage.base import Storage
from livecomments.storage.sqlite import SqliteStorage
from livecomments.storage.sqlite_file import SCHEMA

VIDEO = "history"
PAGE = 50
STORES = ("sqlite", "dynamodb")
NAMES = {"sqlite": "SQLite", "dynamodb": "DynamoDB (moto)"}
# DynamoDB on the emulator: (comments, depths, timed pages per row), full and quick.
DYNAMO_FULL = (2000, (10, 100, 500), 10)
DYNAMO_QUICK = (1000, (10, 500), 3)
BATCH = 25  # items per BatchWriteItem, DynamoDB's maximum


def _text(seq: int) -> str:
    return f"comment number {seq}, a line of chat"


def fill(path: Path, comments: int) -> float:
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(SCHEMA)
    conn.execute("PRAGMA journal_mode=WAL")
    rows: Iterator[tuple[Any, ...]] = (
        (VIDEO, seq, f"user{seq % 997}", _text(seq), 1.7e9 + seq / 100) for seq in range(1, comments + 1)
    )
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO comments (video_id, seq, author, text, created_at) VALUES (?, ?, ?, ?, ?)", rows
    )
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started


async def fill_dynamodb(url: str, comments: int) -> float:
    """The entries as the storage writes them, 25 to a request, 8 requests in flight; and the head."""
    from livecomments.storage.dynamodb_client import create_tables, n, open_client, s

    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        client, prefix = await open_client(url, stack)
        await create_tables(client, prefix)
        table, slots = f"{prefix}_comments", asyncio.Semaphore(8)

        async def put(first: int) -> None:
            wanted = {table: [{"PutRequest": {"Item": {
                "video_id": s(VIDEO), "seq": n(seq), "author": s(f"user{seq % 997}"), "text": s(_text(seq)),
                "created_at": n(1.7e9 + seq / 100), "deleted": {"BOOL": False}, "tok": s(f"fill{seq}")}}}
                for seq in range(first, min(first + BATCH, comments + 1))]}
            async with slots:
                while wanted:  # throttled items come back unprocessed: send them again
                    wanted = (await client.batch_write_item(RequestItems=wanted)).get("UnprocessedItems") or {}

        await asyncio.gather(*(put(first) for first in range(1, comments + 1, BATCH)))
        await client.put_item(TableName=f"{prefix}_heads", Item={"video_id": s(VIDEO), "seq": n(comments)})
    return time.perf_counter() - started


async def time_pages(storage: Storage, comments: int, depth: int, method: str, repeats: int) -> list[float]:
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


async def measure(store: str, storage: Storage, comments: int, repeats: int, depths: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for depth in depths:
        for method in ("cursor", "offset"):
            await time_pages(storage, comments, depth, method, 2)  # caches warm, as in service
            p50, p99, worst = percentiles(await time_pages(storage, comments, depth, method, repeats))
            rows.append({"store": store, "depth": depth, "method": method,
                         "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "max_ms": worst * 1e3})
    return rows


async def run_sqlite(comments: int, repeats: int, depths: Sequence[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory(prefix="lc-history-") as tmp:
        path = Path(tmp) / "history.db"
        fill_s = fill(path, comments)
        storage = await SqliteStorage.open(str(path))
        try:
            rows = await measure("sqlite", storage, comments, repeats, depths)
        finally:
            await storage.close()
    return {"store": "sqlite", "comments": comments, "fill_seconds": fill_s, "repeats": repeats}, rows


async def run_dynamodb(quick: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """On a moto server of its own, started and stopped here; ServiceUnavailable without moto."""
    from livecomments.ops.dynamo_server import DynamoServer
    from livecomments.storage.dynamodb import DynamoStorage

    comments, depths, repeats = DYNAMO_QUICK if quick else DYNAMO_FULL
    server = DynamoServer().start()  # from the main thread, so it dies with us; ~1 s before anything is timed
    try:
        url = server.url()
        fill_s = await fill_dynamodb(url, comments)
        storage = await DynamoStorage.open_url(url)
        try:
            rows = await measure("dynamodb", storage, comments, repeats, depths)
        finally:
            await storage.close()
    finally:
        await asyncio.to_thread(server.stop)
    return {"store": "dynamodb", "comments": comments, "fill_seconds": fill_s, "repeats": repeats}, rows


async def run(comments: int, repeats: int, depths: Sequence[int], stores: Sequence[str] = STORES,
              quick: bool = False) -> dict[str, Any]:
    """Every store asked for; a store that cannot run here (moto not installed) is a note, not a failure."""
    from livecomments.ops.services import ServiceUnavailable
    from livecomments.storage.errors import StorageError

    done: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for store in stores:
        try:
            about, found = await (run_sqlite(comments, repeats, depths) if store == "sqlite" else run_dynamodb(quick))
        except ServiceUnavailable as e:
            skipped.append(f"{NAMES[store]} skipped: {e}")
            continue
        except StorageError as e:  # the emulator timed out: said in the report, the other store's rows stand
            skipped.append(f"{NAMES[store]} failed: {e}")
            continue
        done.append(about)
        rows += found
    return {"stores": done, "rows": rows, "skipped": skipped}


def write_report(results: dict[str, Any], outdir: Path, quick: bool, command: str) -> str:
    rows = [[NAMES[r["store"]], f"{r['depth']:,}", r["method"], f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
             f"{r['max_ms']:.3f}"] for r in results["rows"]]
    stores = "; ".join(
        f"{NAMES[s['store']]}: one video of {s['comments']:,} comments (filled in {s['fill_seconds']:.1f} s), "
        f"{s['repeats']} pages timed per row" for s in results["stores"])
    text = "\n".join(
        [
            "# History benchmark",
            "",
            report.run_line(quick, command),
            "",
            f"Pages of {PAGE} through the storage's `page` (what `GET …/comments` calls). {stores}.",
            *[f"\n{note}" for note in results["skipped"]],
            "",
            report.table(["store", "depth", "method", "p50 ms", "p99 ms", "max ms"], rows),
            "",
            "A cursor page costs the same at any depth (a seek on the primary key); an offset page grows "
            "with the depth, because the store reads and discards every skipped row.",
            "",
            "DynamoDB rows run on moto, an in-memory emulator in Python on this machine: it walks the whole "
            "partition for every Query, so its pages are slow and its figures are our code's cost plus the "
            "emulator's, not DynamoDB's. What carries over is the shape: on DynamoDB a Query has no offset, "
            "so `offset=` reads (and pays read capacity for) every skipped item, while a cursor page starts "
            "at its key.",
            "",
        ]
    )
    report.write(outdir, "history", results, text, quick)
    report.bars(
        outdir / "history.png",
        f"History page time, p50 ms (log scale)\n{report.run_mode(quick)} run",
        [f"{NAMES[r['store']]}\n{r['method']} @ {r['depth']:,}" for r in results["rows"]],
        [("p50 ms", [r["p50_ms"] for r in results["rows"]])],
        log=True,  # offset at depth 100,000 is ~30× a cursor page: linear, the cursor bars vanish
    )
    return text
