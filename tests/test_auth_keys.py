"""Keys for a team's own login: several static keys at once (rollover), keys from a JWKS endpoint
chosen by kid (rotation, an unknown-kid flood, a slow or absent endpoint), and the Python example
of docs/identity.md. Every case through a real `livecomments serve` process's POST; the JWKS is
served by a small aiohttp app in the test: the product's login server, not our code."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.fixtures.processes import LivecommentsProcess, Spawn, free_port
from tests.helpers import post, post_reply

ROOT = Path(__file__).parent.parent
NEW_SECRET = "the-new-secret-of-at-least-32-bytes!!"
OLD_SECRET = "the-old-secret-of-at-least-32-bytes!!"
AUDIENCE, ISSUER = "livecomments", "https://login.example.com"  # as docs/identity.md's example mints
COOLDOWN = "0.3"  # seconds between unknown-kid fetches, where a test waits for refreshes


def claims(sub: str = "u-ana", ttl: float = 600, **extra: Any) -> dict[str, Any]:
    return {"sub": sub, "exp": int(time.time() + ttl), "jti": uuid.uuid4().hex, **extra}  # jti: new bytes each time


class LoginServer:
    """A JWKS endpoint on a free port: its keys, how many requests it got, and a hold that keeps
    requests waiting (a slow endpoint)."""

    def __init__(self) -> None:
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.published: list[str] = []  # the kids served
        self.requests = 0
        self.in_flight = 0
        self.entered = asyncio.Event()
        self.hold: asyncio.Event | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0

    def key(self, kid: str) -> ec.EllipticCurvePrivateKey:
        return self.keys.setdefault(kid, ec.generate_private_key(ec.SECP256R1()))

    def publish(self, *kids: str) -> None:
        for kid in kids:
            self.key(kid)
        self.published = list(kids)

    def token(self, kid: str, **extra: Any) -> str:
        return jwt.encode(claims(**extra), self.key(kid), algorithm="ES256", headers={"kid": kid})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    async def _jwks(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        self.entered.set()
        try:
            if self.hold is not None:
                await self.hold.wait()
            keys = []
            for kid in self.published:
                jwk = jwt.algorithms.ECAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
                keys.append({**jwk, "kid": kid, "alg": "ES256", "use": "sig"})
            return web.json_response({"keys": keys})
        finally:
            self.in_flight -= 1

    async def start(self, port: int = 0) -> LoginServer:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = port or int(self.runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def login() -> AsyncIterator[LoginServer]:
    server = await LoginServer().start()
    yield server
    await server.stop()


async def start(spawn: Spawn, *args: str) -> LivecommentsProcess:
    """spawn() waits for the server to listen, and the server fetches the JWKS from this test's
    loop before it listens: the wait runs in a thread so the loop can answer."""
    return await asyncio.to_thread(spawn, *args)


async def until_posted(session: aiohttp.ClientSession, base: str, mint: Any, timeout: float = 10.0) -> dict[str, Any]:
    """POST with a fresh token from mint() until it is accepted (the server refreshes its keys
    at most once per cooldown); the answers before that must be 401s."""
    async with asyncio.timeout(timeout):
        while True:
            reply = await post_reply(session, base, "v1", author=None, token=mint())
            if reply.status == 201:
                return reply.body  # type: ignore[no-any-return]
            assert reply.status == 401, reply.body
            await asyncio.sleep(0.1)  # polling a refresh that only a later request triggers: no event to wait on


async def test_jwks_down_at_start_then_up_then_rotated(spawn: Spawn, session: aiohttp.ClientSession) -> None:
    login = LoginServer()
    login.port = free_port()
    login.publish("k1")
    server = spawn("--auth-jwks-url", login.url, "--auth-jwks-cooldown", COOLDOWN)  # starts with the endpoint down
    assert "cannot fetch keys" in server.log_path.read_text()
    body = await post(session, server.url, "v1", author=None, token=login.token("k1"), expect=401)
    assert body["error"]["code"] == "unauthorized"
    await login.start(login.port)
    try:
        await until_posted(session, server.url, lambda: login.token("k1"))  # a retry found the keys
        login.publish("k1", "k2")  # the login server rotates: the new key next to the old one
        await until_posted(session, server.url, lambda: login.token("k2"))  # an unknown kid: fetched
        await post(session, server.url, "v1", author=None, token=login.token("k1"))  # the old kid still verifies
        fetches = login.requests
        login.publish("k2")  # the old key removed
        async with asyncio.timeout(10):
            while True:  # an unknown kid triggers the refresh (else the periodic one, minutes later)
                await post(session, server.url, "v1", author=None, token=login.token("k3"), expect=401)
                reply = await post_reply(session, server.url, "v1", author=None, token=login.token("k1"))
                if reply.status == 401:
                    break
                assert reply.status == 201, reply.body
                await asyncio.sleep(0.1)  # the refresh waits out the cooldown: nothing to wait on
        assert reply.body["error"]["code"] == "unauthorized" and login.requests > fetches
        await post(session, server.url, "v1", author=None, token=login.token("k2"))
    finally:
        await login.stop()


async def test_unknown_kids_and_a_slow_jwks_neither_flood_it_nor_stall_cached_keys(
    spawn: Spawn, login: LoginServer, session: aiohttp.ClientSession,
) -> None:
    login.publish("k1")
    server = await start(spawn, "--auth-jwks-url", login.url)  # the default cooldown: 10 s
    assert login.requests == 1  # fetched at start, before the port opened
    login.hold = asyncio.Event()  # the endpoint hangs from now on
    login.entered.clear()
    stuck = asyncio.create_task(post_reply(session, server.url, "v1", author=None, token=login.token("new-kid")))
    async with asyncio.timeout(10):
        await login.entered.wait()
    began = time.monotonic()
    await post(session, server.url, "v1", author=None, token=login.token("k1"))  # a cached key: no wait
    assert login.in_flight == 1  # ... answered while the fetch still hangs
    flood = [post_reply(session, server.url, "v1", author=None, token=login.token(f"random-{i}")) for i in range(30)]
    replies = await asyncio.gather(*flood)
    assert {r.status for r in replies} == {401}
    assert all(r.body["error"]["message"] == "the token's algorithm or key id (kid) is not accepted here" for r in replies)
    refused = await asyncio.wait_for(stuck, 15)  # its fetch timed out (3 s): a 401, not a hang
    assert refused.status == 401 and time.monotonic() - began < 12
    assert login.requests == 2  # the start, and one fetch for all the unknown kids
    log = server.log_path.read_text()
    assert re.search(r"auth_jwks_url \S+: cannot fetch keys \(timed out\); keeping 1 cached keys", log), log


@pytest.fixture(scope="module")
def static_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivecommentsProcess]:
    """Two HS256 secrets at once: the new one and the one before it."""
    spawner = Spawn(tmp_path_factory.mktemp("static"))
    try:
        yield spawner("--auth-jwt-secret", NEW_SECRET, "--auth-jwt-previous-secret", OLD_SECRET,
                      "--auth-jwt-audience", AUDIENCE, "--auth-jwt-issuer", ISSUER)
    finally:
        spawner.stop_all()


def hs256(secret: str, **extra: Any) -> str:
    return jwt.encode(claims(aud=AUDIENCE, iss=ISSUER, **extra), secret, algorithm="HS256")


async def test_two_static_secrets_both_verify(static_server: LivecommentsProcess, session: aiohttp.ClientSession) -> None:
    base = static_server.url
    assert (await post(session, base, "s1", author=None, token=hs256(NEW_SECRET, name="New")))["author"] == "New"
    assert (await post(session, base, "s1", author=None, token=hs256(OLD_SECRET, name="Old")))["author"] == "Old"
    other = await post(session, base, "s1", author=None, token=hs256("a-third-secret-of-at-least-32-bytes!"), expect=401)
    assert other["error"] == {"code": "unauthorized", "message": "the token's signature does not verify"}
    expired = await post(session, base, "s1", author=None, token=hs256(OLD_SECRET, ttl=-120), expect=401)
    assert expired["error"]["code"] == "token_expired"


async def test_several_pem_public_keys_each_verify(spawn: Spawn, session: aiohttp.ClientSession) -> None:
    ec_key, ed_key = ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()
    bundle = b"".join(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                      for k in (ec_key, ed_key)).decode()
    server = spawn(env={"LIVECOMMENTS_AUTH_JWT_PUBLIC_KEY": bundle})
    await post(session, server.url, "p1", author=None, token=jwt.encode(claims(), ec_key, algorithm="ES256"))
    await post(session, server.url, "p1", author=None, token=jwt.encode(claims(), ed_key, algorithm="EdDSA"))
    stranger = ec.generate_private_key(ec.SECP256R1())
    await post(session, server.url, "p1", author=None, token=jwt.encode(claims(), stranger, algorithm="ES256"), expect=401)


async def test_the_python_example_of_docs_identity_mints_a_token_the_server_accepts(
    static_server: LivecommentsProcess, session: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    doc = (ROOT / "docs" / "identity.md").read_text()
    example = re.search(r"### Python \(PyJWT\).*?```python\n(.*?)```", doc, re.DOTALL)
    assert example is not None, "docs/identity.md lost its Python example"
    script = tmp_path / "mint.py"
    script.write_text(example.group(1))
    minted = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=True,
                            env={**os.environ, "LIVECOMMENTS_AUTH_JWT_SECRET": NEW_SECRET})
    body = await post(session, static_server.url, "doc", "from the docs", author=None, token=minted.stdout.strip())
    assert body["author"] == "Ana"
