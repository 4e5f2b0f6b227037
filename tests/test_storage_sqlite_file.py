"""The SQLite file under a running server: deleted, or the disk it is on full. Either way posts are
refused (503, nothing acknowledged that a restart would lose), /readyz says so, and the log says
it in one line; a full disk is ready again once a write succeeds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livecomments.backends import open_storage
from livecomments.model import NewComment
from livecomments.storage.errors import StorageFull
from tests.conftest import StartServer
from tests.helpers import history, post, post_reply, until_status


async def _readyz(session: Any, base: str) -> tuple[int, dict[str, Any]]:
    async with session.get(f"{base}/readyz") as r:
        return r.status, await r.json()


async def test_a_deleted_database_file_refuses_posts_and_is_not_ready(spawn: Any, session: Any) -> None:
    proc = spawn("--expose-errors")
    base = proc.url
    for i in range(3):
        await post(session, base, "v", f"c{i}")
    spawn.storage_path.unlink()
    reply = await post_reply(session, base, "v", "into the lost file?")
    assert reply.status == 503 and reply.body["error"]["code"] == "storage_unavailable", reply.body
    assert "database file" in reply.body["error"]["message"], reply.body
    status, body = await _readyz(session, base)
    assert (status, body["reason"]) == (503, "storage_unavailable"), body
    assert "deleted" in body["detail"], body
    reply = await post_reply(session, base, "v", "and again")
    assert reply.status == 503, reply.body
    log = proc.log_path.read_text()
    noticed = [line for line in log.splitlines() if "ERROR" in line and "was deleted while the server ran" in line]
    assert len(noticed) == 1, log[-2000:]  # noticed once (each refused post has its own warning line)
    assert "Traceback" not in log


@contextlib.contextmanager
def _small_disk(where: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (as root); elsewhere the test cannot fill a disk and is skipped."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(path: Path) -> None:
    """Write `path` until the filesystem has no byte left."""
    with open(path, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass


async def test_a_full_disk_is_not_ready_and_says_so_until_a_write_succeeds(
        start_server: StartServer, session: Any, tmp_path: Path) -> None:
    with _small_disk(tmp_path / "disk") as disk:
        base = await start_server(storage=f"sqlite:///{disk}/lc.db", expose_errors=True)
        await post(session, base, "v", "before")
        _fill(disk / "filler")
        body = await post(session, base, "v", "x" * 2000, expect=503)
        assert body["error"]["code"] == "storage_unavailable", body
        assert "full" in body["error"]["message"] and "cannot be reached" not in body["error"]["message"], body
        status, ready = await _readyz(session, base)
        assert (status, ready["reason"]) == (503, "storage_unavailable") and "full" in ready["detail"], ready
        (disk / "filler").unlink()
        await until_status(session, f"{base}/readyz", 200, timeout=10)
        assert (await post(session, base, "v", "after"))["seq"] == 2  # nothing of the refused post was stored
        assert [c["text"] for c in (await history(session, base, "v"))["comments"]] == ["after", "before"]


async def test_a_database_at_its_page_limit_is_full_then_recovers(tmp_path: Path) -> None:
    """SQLITE_FULL without a small disk: PRAGMA max_page_count on the writer's connection (the same
    error, the same path as a full disk) wherever mounting a tmpfs is not allowed."""
    store: Any = await open_storage(f"sqlite:///{tmp_path}/capped.db")
    try:
        await store.add(NewComment("v", "ana", "before"))
        pages = await store._write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
        await store._write(lambda conn: conn.execute(f"PRAGMA max_page_count={pages}"))
        with pytest.raises(StorageFull):
            for i in range(50):  # until a post needs a page more than the file may have
                await store.add(NewComment("v", "ana", f"{i}" + "x" * 2000))
        assert not await store.healthy() and "full" in store.not_ready_reason
        await store._write(lambda conn: conn.execute(f"PRAGMA max_page_count={pages * 100}"))
        async with asyncio.timeout(5):
            assert await store.healthy() and store.not_ready_reason == ""
        await store.add(NewComment("v", "ana", "after"))
    finally:
        await store.close()
    assert os.path.exists(tmp_path / "capped.db")
