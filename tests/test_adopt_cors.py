"""CORS (issue 22): a preflight from an origin not in `cors_origins` is answered, without any
Access-Control-* header, instead of routing's 405: the browser then refuses the request itself."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import StartServer
from tests.helpers import all_seqs

ALLOWED = "https://app.example"
OTHER = "https://evil.example"


def preflight(origin: str, method: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type, idempotency-key"}


@pytest.mark.parametrize(("path", "method"), [("/v1/videos/v1/comments", "POST"), ("/v1/videos/v1/stream", "GET"),
                                              ("/v1/videos/v1/settings", "PUT")])
async def test_a_preflight_from_an_origin_not_listed_is_answered_without_allow_origin(
    start_server: StartServer, session: aiohttp.ClientSession, path: str, method: str,
) -> None:
    base = await start_server(cors_origins=(ALLOWED, "http://localhost:3000"))
    async with session.options(base + path, headers=preflight(OTHER, method)) as r:
        assert r.status == 204, (r.status, await r.text())  # it was 405 method_not_allowed
        assert [h for h in r.headers if h.lower().startswith("access-control-")] == []
        assert "Origin" in r.headers["Vary"]  # a cache keeps this answer from the listed origins
        assert await r.read() == b""
    # The listed origin's preflight on the same path is unchanged.
    async with session.options(base + path, headers=preflight(ALLOWED, method)) as r:
        assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == ALLOWED
    # A preflight only asks: nothing was stored.
    assert await all_seqs(session, base, "v1") == []


async def test_an_options_request_that_is_no_preflight_still_gets_405(start_server: StartServer,
                                                                       session: aiohttp.ClientSession) -> None:
    base = await start_server(cors_origins=(ALLOWED,))
    async with session.options(f"{base}/v1/videos/v1/comments", headers={"Origin": OTHER}) as r:
        assert r.status == 405
        assert (await r.json())["error"]["code"] == "method_not_allowed"
        assert "Access-Control-Allow-Origin" not in r.headers
