"""CORS: preflights and Access-Control-Allow-Origin, over HTTP with Origin headers."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import jwt
import pytest
from click.testing import CliRunner

from livecomments.cli import main
from livecomments.config import ConfigError
from livecomments.config_layers import load
from tests.conftest import StartServer, make_config
from tests.helpers import post_reply
from tests.sse import open_stream

ALLOWED = "https://app.example"
OTHER = "https://evil.example"
SECRET = "a-test-secret-of-at-least-32-bytes!"


def preflight(origin: str, method: str = "POST",
              headers: str = "authorization, content-type, idempotency-key") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE", "PUT"])
async def test_an_allowed_origins_preflight(start_server: StartServer, session: aiohttp.ClientSession,
                                            method: str) -> None:
    base = await start_server(cors_origins=(ALLOWED, "http://localhost:3000"), auth_jwt_secret=SECRET)
    async with session.options(f"{base}/v1/videos/v1/comments", headers=preflight(ALLOWED, method)) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert method in r.headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "idempotency-key", "last-event-id"} <= allowed
        assert "Origin" in r.headers["Vary"]
        assert "Access-Control-Allow-Credentials" not in r.headers


async def test_another_origin_gets_no_allow_origin(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server(cors_origins=(ALLOWED,))
    async with session.options(f"{base}/v1/videos/v1/comments", headers=preflight(OTHER)) as r:
        assert r.status == 204  # answered, without Access-Control-*: the browser refuses (test_adopt_cors.py)
        assert "Access-Control-Allow-Origin" not in r.headers
    async with session.get(f"{base}/v1/videos/v1/comments", headers={"Origin": OTHER}) as r:
        assert r.status == 200
        assert "Access-Control-Allow-Origin" not in r.headers
        # caches keep the origins apart (and the tokens: a moderator's page shows authors' subs)
        assert r.headers["Vary"] == "Authorization, Origin"


async def test_real_answers_carry_allow_origin_errors_included(start_server: StartServer,
                                                               session: aiohttp.ClientSession) -> None:
    base = await start_server(cors_origins=(ALLOWED,), auth_jwt_secret=SECRET)
    token = jwt.encode({"sub": "ana", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    r = await post_reply(session, base, "v1", "hi", author=None, token=token, headers={"Origin": ALLOWED})
    assert r.status == 201
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Retry-After" in r.headers["Access-Control-Expose-Headers"]
    r = await post_reply(session, base, "v1", "hi", author=None, headers={"Origin": ALLOWED})
    assert r.status == 401  # the page can read why
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "WWW-Authenticate" in r.headers["Access-Control-Expose-Headers"]


async def test_a_stream_from_an_allowed_origin(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server(cors_origins=(ALLOWED,))
    stream = await open_stream(session, base, "v1", last_event_id=0, headers={"Origin": ALLOWED}, timeout=10)
    assert stream.resp.headers["Access-Control-Allow-Origin"] == ALLOWED  # open_stream: a 200 with retry:
    assert stream.resp.headers["Vary"] == "Origin"
    stream.close()


async def test_any_origin(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server(cors_origins=("*",))
    async with session.get(f"{base}/v1/videos/v1", headers={"Origin": OTHER}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_without_cors_origins_nothing_changes(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server()
    async with session.options(f"{base}/v1/videos/v1/comments", headers=preflight(ALLOWED)) as r:
        assert r.status == 405
        assert "Access-Control-Allow-Origin" not in r.headers
    async with session.get(f"{base}/v1/videos/v1/comments", headers={"Origin": ALLOWED}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers and r.headers["Vary"] == "Authorization"


def test_origins_are_a_list_in_the_file_and_comma_separated_elsewhere(tmp_path: Path) -> None:
    file = tmp_path / "lc.toml"
    file.write_text(f'cors_origins = ["{ALLOWED}", "http://localhost:3000"]\n')
    assert load(str(file), environ={}).cors_origins == (ALLOWED, "http://localhost:3000")
    env = {"LIVECOMMENTS_CORS_ORIGINS": f"{ALLOWED}, http://localhost:3000,"}
    assert load(None, environ=env).cors_origins == (ALLOWED, "http://localhost:3000")
    assert load(None, environ={}, flags={"cors_origins": ALLOWED}).cors_origins == (ALLOWED,)
    with pytest.raises(ConfigError, match="is not a list of origins"):
        file.write_text("cors_origins = 3\n")
        load(str(file), environ={})
    with pytest.raises(ConfigError, match="is not an origin"):
        make_config(tmp_path, cors_origins=("https://app.example/path",))
    printed = CliRunner().invoke(main, ["serve", "--cors-origins", f"{ALLOWED},http://x:1", "--print-config"], env={})
    assert printed.exit_code == 0, printed.output
    assert f'cors_origins = ["{ALLOWED}", "http://x:1"]' in printed.output
    file.write_text(printed.output)  # what --print-config prints loads back
    assert load(str(file), environ={}).cors_origins == (ALLOWED, "http://x:1")
