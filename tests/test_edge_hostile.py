"""Requests no well-behaved client library would send: raw bytes over a socket. Each gets a 4xx
in the JSON error shape, changes nothing, and leaves no ERROR (no traceback) in the log."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import jwt
import orjson
import pytest

from tests.conftest import StartServer
from tests.helpers import all_seqs

SECRET = "a-test-secret-of-at-least-32-bytes!"


async def raw(base: str, head: bytes, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
    """Send one request as bytes (Connection: close) and read the whole answer: status, headers, body."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        async with asyncio.timeout(5):
            writer.write(head + b"Host: x\r\nConnection: close\r\n" +
                         (f"Content-Length: {len(body)}\r\n".encode() if body else b"") + b"\r\n" + body)
            answer = await reader.read()
    finally:
        writer.close()
    assert answer, "the server closed the connection without an answer"
    status_line, _, rest = answer.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, payload


def assert_error(status: int, headers: dict[bytes, bytes], payload: bytes, expected: int, code: str) -> None:
    assert status == expected, payload
    assert headers[b"content-type"].startswith(b"application/json")
    error = orjson.loads(payload)["error"]
    assert error["code"] == code and error["message"]


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


NOT_UTF8 = b"Authorization: Bearer \xff\xfe\xc3(.e30.x\r\n"
REQUESTS = {
    "post": (b"POST /v1/videos/v1/comments HTTP/1.1\r\nContent-Type: application/json\r\n" + NOT_UTF8,
             b'{"text": "hi"}'),
    "history": (b"GET /v1/videos/v1/comments HTTP/1.1\r\n" + NOT_UTF8, b""),
    "delete": (b"DELETE /v1/videos/v1/comments/1 HTTP/1.1\r\n" + NOT_UTF8, b""),
}


@pytest.mark.parametrize("request_name", list(REQUESTS))
async def test_a_bearer_token_that_is_not_utf8_is_401(start_server: StartServer, caplog: pytest.LogCaptureFixture,
                                                     request_name: str) -> None:
    base = await start_server(auth_jwt_secret=SECRET, auth_streams=True)
    head, body = REQUESTS[request_name]
    with caplog.at_level(logging.WARNING):
        status, headers, payload = await raw(base, head, body)
    assert_error(status, headers, payload, 401, "unauthorized")
    assert headers[b"www-authenticate"].startswith(b'Bearer realm="livecomments", error="invalid_token"')
    no_errors_logged(caplog)


async def test_a_redirect_with_crlf_in_the_query_is_400_not_an_empty_reply(
    start_server: StartServer, caplog: pytest.LogCaptureFixture,
) -> None:
    base = await start_server()
    with caplog.at_level(logging.WARNING):
        status, headers, payload = await raw(base, b"GET /?%0d%0aX-Injected:%201 HTTP/1.1\r\n")
    assert_error(status, headers, payload, 400, "bad_request")
    assert b"x-injected" not in headers
    no_errors_logged(caplog)


async def test_a_redirect_keeps_an_ordinary_query_encoded(start_server: StartServer) -> None:
    base = await start_server()
    status, headers, _ = await raw(base, b"GET /?video=abc&x=%20y HTTP/1.1\r\n")
    assert status == 302
    assert headers[b"location"] == b"/demo/?video=abc&x=+y"


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
async def test_a_signed_token_with_a_400_digit_time_is_401(start_server: StartServer, session: aiohttp.ClientSession,
                                                          caplog: pytest.LogCaptureFixture, claim: str) -> None:
    base = await start_server(auth_jwt_secret=SECRET)
    claims = {"sub": "ana", "exp": int(time.time()) + 600, claim: int("9" * 400)}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    head = (b"POST /v1/videos/v1/comments HTTP/1.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n")
    with caplog.at_level(logging.WARNING):
        status, headers, payload = await raw(base, head, b'{"text": "hi"}')
    assert_error(status, headers, payload, 401, "unauthorized")
    no_errors_logged(caplog)
    assert await all_seqs(session, base, "v1") == []
