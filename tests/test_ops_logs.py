"""Logs an operator can use: a client that goes away is no error, one line per event, JSON, access log."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import struct
import sys

from livecomments.logs import JsonFormatter, TextFormatter
from tests.helpers import post
from tests.sse import open_stream

ABORTS = 400


async def abort_mid_stream(host: str, port: int, video: str) -> None:
    """Ask for a long backlog, read a little, then reset the connection (SO_LINGER 0: RST, not FIN)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /v1/videos/{video}/stream?since=0 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    await reader.read(100)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def abort_mid_body(host: str, port: int, video: str) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"POST /v1/videos/{video}/comments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 1000\r\n\r\n{\"text\": \"cut".encode())
    await writer.drain()
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def test_clients_going_away_mid_request_log_no_error(spawn, session):
    # a small backlog_limit: catch-up is many reads and writes, so resets land between them
    server = spawn("--backlog-limit", "5")
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(300):  # a backlog far larger than the socket buffers: catch-up writes meet the reset
        await post(session, server.url, "gone", "x" * 1500)
    async with asyncio.timeout(60):
        for _ in range(ABORTS // 20):
            await asyncio.gather(*(abort_mid_stream(host, int(port), "gone") for _ in range(18)),
                                 *(abort_mid_body(host, int(port), "gone") for _ in range(2)))
    async with session.get(f"{server.url}/healthz") as resp:  # still serving
        assert resp.status == 200
    assert server.stop(signal.SIGTERM) == 0
    log = server.log_path.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[:3000]


async def test_json_log_and_access_log(spawn, session):
    server = spawn("--log-format", "json", "--access-log", "--server-id", "lc-access")
    async with session.get(f"{server.url}/healthz") as resp:
        assert resp.status == 200
    stream = await open_stream(session, server.url, "acc")  # its line is written when it goes live
    await post(session, server.url, "acc", "hi", "a")
    assert (await stream.next_comment())["text"] == "hi"
    await post(session, server.url, "acc", "", author=None, expect=422)
    stream.close()
    assert server.stop(signal.SIGTERM) == 0
    events = [json.loads(line) for line in server.log_path.read_text().splitlines()]  # every line is JSON
    assert all({"ts", "level", "logger", "msg"} <= event.keys() for event in events), events
    access = [(e["method"], e["path"], e["status"]) for e in events if e["logger"] == "livecomments.edge.access"]
    assert access == [("GET", "/healthz", 200), ("GET", "/v1/videos/acc/stream", 200),
                      ("POST", "/v1/videos/acc/comments", 201), ("POST", "/v1/videos/acc/comments", 422)], events
    for event in events:
        if event["logger"] == "livecomments.edge.access":
            assert event["server_id"] == "lc-access" and event["duration_ms"] >= 0


async def test_access_log_is_off_by_default(spawn, session):
    server = spawn()
    async with session.get(f"{server.url}/healthz") as resp:
        assert resp.status == 200
    assert server.stop(signal.SIGTERM) == 0
    assert "livecomments.edge.access" not in server.log_path.read_text()


def _record_with_traceback() -> logging.LogRecord:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        return logging.LogRecord("livecomments.x", logging.ERROR, __file__, 1, "failed on %s", ("a b",),
                                 sys.exc_info())


def test_a_traceback_stays_on_its_events_line():
    text = TextFormatter().format(_record_with_traceback())
    assert "\n" not in text and "ERROR livecomments.x: failed on a b" in text and "ValueError: boom" in text
    event = json.loads(JsonFormatter().format(_record_with_traceback()))
    assert event["msg"] == "failed on a b" and "ValueError: boom\nsecond line" in event["exc"]
