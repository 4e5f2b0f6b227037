"""Bearer tokens on posting, against a real server: who may post, and as whom."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from livecomments.cli import main
from livecomments.config import ConfigError
from tests.conftest import StartServer, make_config
from tests.helpers import history, post, post_reply

SECRET = "a-test-secret-of-at-least-32-bytes!"
ISSUER = "https://id.example"
AUDIENCE = "livecomments"


def hs256(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "u-ana", "exp": int(time.time()) + 600, **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """A token PyJWT would refuse to make: HS256 keyed with whatever bytes we choose."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def test_a_token_names_the_author_and_the_body_cannot(start_server: StartServer,
                                                           session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET)
    assert (await post(session, base, "v1", "hi", "Mallory", token=hs256(claims(name="Ana"))))["author"] == "Ana"
    body = await post(session, base, "v1", "no author in the body", None, token=hs256(claims()))
    assert body["author"] == "u-ana"  # no name: the sub


async def test_no_token_is_401_with_a_bearer_challenge(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET)
    reply = await post_reply(session, base, "v1", author="mallory")
    assert reply.status == 401
    assert reply.body["error"]["code"] == "unauthorized"
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="livecomments"'
    assert (await history(session, base, "v1"))["comments"] == []


EXPIRED = claims(exp=int(time.time()) - 60)
BAD_TOKENS = {
    "alg none": b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(claims()).encode()) + ".",
    "wrong key": hs256(claims(), "another-secret-of-at-least-32-bytes"),
    "expired": hs256(EXPIRED),
    "malformed": "not.a.jwt",
    "no exp": hs256({"sub": "u-ana"}),
    "no sub": hs256({"exp": int(time.time()) + 600}),
    "tampered": hs256(claims())[:-4] + "AAAA",
}


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_a_bad_token_is_401_invalid_token_and_stores_nothing(
    start_server: StartServer, session: aiohttp.ClientSession, token: str,
) -> None:
    base = await start_server(auth_jwt_secret=SECRET)
    reply = await post_reply(session, base, "v1", author="mallory", token=token)
    assert reply.status == 401, reply.body
    # an expired token says so, so a client knows to fetch a fresh one; every other bad token is just refused
    assert reply.body["error"]["code"] == ("token_expired" if token == BAD_TOKENS["expired"] else "unauthorized")
    assert reply.headers["WWW-Authenticate"].startswith('Bearer realm="livecomments", error="invalid_token"')
    assert (await history(session, base, "v1"))["comments"] == []


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwdw==", "Bearer", "Bearer  "])
async def test_not_a_bearer_authorization_is_401(start_server: StartServer, session: aiohttp.ClientSession,
                                                 authorization: str) -> None:
    base = await start_server(auth_jwt_secret=SECRET)
    async with session.post(f"{base}/v1/videos/v1/comments", json={"text": "hi"},
                            headers={"Authorization": authorization}) as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "unauthorized"


async def test_audience_and_issuer_are_checked_when_configured(start_server: StartServer,
                                                               session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET, auth_jwt_audience=AUDIENCE, auth_jwt_issuer=ISSUER)
    await post(session, base, "v1", token=hs256(claims(aud=AUDIENCE, iss=ISSUER)))
    await post(session, base, "v1", token=hs256(claims(aud="other", iss=ISSUER)), expect=401)
    await post(session, base, "v1", token=hs256(claims(aud=AUDIENCE, iss="https://evil.example")), expect=401)
    await post(session, base, "v1", token=hs256(claims(iss=ISSUER)), expect=401)  # no aud at all


def _pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


ASYMMETRIC = {
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
async def test_public_key_tokens_from_a_pem_file(start_server: StartServer, session: aiohttp.ClientSession,
                                                 tmp_path: Path, algorithm: str) -> None:
    private = ASYMMETRIC[algorithm]()
    path = tmp_path / "public.pem"
    path.write_bytes(_pem_public(private))
    base = await start_server(auth_jwt_public_key=str(path))
    body = await post(session, base, "v1", "hi", "mallory", token=jwt.encode(claims(name="Ana"), private, algorithm=algorithm))
    assert body.get("author") == "Ana"
    other = ASYMMETRIC[algorithm]()  # same kind of key, not the configured one
    await post(session, base, "v1", token=jwt.encode(claims(), other, algorithm=algorithm), expect=401)


async def test_hs256_signed_with_the_public_key_is_refused(start_server: StartServer,
                                                           session: aiohttp.ClientSession) -> None:
    """Algorithm confusion: the verifier must not treat the RSA public key as an HMAC secret."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _pem_public(private)
    base = await start_server(auth_jwt_public_key=pem.decode())  # the PEM itself, not a path
    for key in (pem, pem.strip()):
        await post(session, base, "v1", token=forge({"alg": "HS256", "typ": "JWT"}, claims(), key), expect=401)
    assert (await history(session, base, "v1"))["comments"] == []


def test_key_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        make_config(tmp_path, auth_jwt_secret="short")
    with pytest.raises(ConfigError, match="not both"):
        make_config(tmp_path, auth_jwt_secret=SECRET, auth_jwt_public_key="-----BEGIN PUBLIC KEY-----")
    with pytest.raises(ConfigError, match="cannot read"):
        make_config(tmp_path, auth_jwt_public_key=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="not a PEM public key"):
        make_config(tmp_path, auth_jwt_public_key="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match="auth_streams needs a token key"):
        make_config(tmp_path, auth_streams=True)


def test_open_posting_is_refused_off_loopback_unless_asked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--open-posting"):
        make_config(tmp_path, host="0.0.0.0")
    assert make_config(tmp_path, host="0.0.0.0", open_posting=True).open_posting
    assert make_config(tmp_path, host="0.0.0.0", auth_jwt_secret=SECRET).host == "0.0.0.0"
    assert make_config(tmp_path, host="0.0.0.0", role="realtime", broker="redis://127.0.0.1:1/0").role == "realtime"
    runner = CliRunner()
    refused = runner.invoke(main, ["serve", "--host", "0.0.0.0", "--print-config"], env={})
    assert refused.exit_code != 0 and "--open-posting" in refused.output
    allowed = runner.invoke(main, ["serve", "--host", "0.0.0.0", "--open-posting", "--print-config"], env={})
    assert allowed.exit_code == 0, allowed.output
    assert "open_posting = true" in allowed.output


async def test_open_posting_is_said_once_at_start(start_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="livecomments.edge.app"):
        await start_server()
        await start_server(auth_jwt_secret=SECRET)
    assert [r.getMessage() for r in caplog.records if "posting is open" in r.getMessage()] == [
        "posting is open: no auth_jwt_secret or auth_jwt_public_key, anyone may post as anyone"
    ]


async def test_token_command_mints_what_the_server_accepts(start_server: StartServer,
                                                           session: aiohttp.ClientSession) -> None:
    env = {"LIVECOMMENTS_AUTH_JWT_SECRET": SECRET, "LIVECOMMENTS_AUTH_JWT_AUDIENCE": AUDIENCE}
    result = CliRunner().invoke(main, ["token", "--sub", "ana", "--name", "Ana", "--moderator", "--ttl", "60"], env=env)
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert decoded["sub"] == "ana" and decoded["roles"] == ["moderator"] and decoded["exp"] - decoded["iat"] == 60
    base = await start_server(auth_jwt_secret=SECRET, auth_jwt_audience=AUDIENCE)
    assert (await post(session, base, "v1", "hi", "mallory", token=token))["author"] == "Ana"


async def test_token_command_with_a_private_key(start_server: StartServer, session: aiohttp.ClientSession,
                                                tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    key_path = tmp_path / "private.pem"
    key_path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    result = CliRunner().invoke(main, ["token", "--sub", "bob", "--private-key", str(key_path)], env={})
    assert result.exit_code == 0, result.output
    base = await start_server(auth_jwt_public_key=_pem_public(private).decode())
    assert (await post(session, base, "v1", "hi", "mallory", token=result.output.strip()))["author"] == "bob"


def test_token_command_without_a_key_says_so() -> None:
    result = CliRunner().invoke(main, ["token", "--sub", "ana"], env={})
    assert result.exit_code != 0 and "no signing key" in result.output


async def test_a_remembered_token_still_expires(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    """Verified tokens are remembered (authentication is cheaper per post), but only until their exp."""
    base = await start_server(auth_jwt_secret=SECRET, auth_jwt_leeway=0.0)
    exp = int(time.time()) + 1
    token = hs256(claims(exp=exp))
    await post(session, base, "v1", token=token)
    await post(session, base, "v1", token=token)  # the remembered one
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)  # the expiry itself is under test: a clock
    body = await post(session, base, "v1", token=token, expect=401)
    assert body["error"]["message"] == "the token has expired"
    assert len((await history(session, base, "v1"))["comments"]) == 2


async def test_a_token_from_an_issuer_whose_clock_is_ahead_is_accepted(start_server: StartServer,
                                                                       session: aiohttp.ClientSession) -> None:
    """An issuer 5 s ahead of us mints tokens issued (and valid from) 5 s in our future."""
    ahead = int(time.time()) + 5
    token = hs256(claims(iat=ahead, nbf=ahead))
    base = await start_server(auth_jwt_secret=SECRET)
    await post(session, base, "v1", token=token)
    strict = await start_server(auth_jwt_secret=SECRET, auth_jwt_leeway=0.0)
    assert (await post(session, strict, "v1", token=token, expect=401))["error"]["code"] == "unauthorized"


async def test_the_leeway_is_bounded(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    base = await start_server(auth_jwt_secret=SECRET)
    await post(session, base, "v1", token=hs256(claims(exp=int(time.time()) - 5)))  # within 30 s
    body = await post(session, base, "v1", token=hs256(claims(exp=int(time.time()) - 60)), expect=401)
    assert body["error"]["message"] == "the token has expired"
    assert len((await history(session, base, "v1"))["comments"]) == 1


def test_leeway_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="auth_jwt_leeway must be >= 0"):
        make_config(tmp_path, auth_jwt_secret=SECRET, auth_jwt_leeway=-1.0)


@pytest.mark.parametrize("name", [True, False])
async def test_a_display_name_longer_than_max_author_is_cut(start_server: StartServer, session: aiohttp.ClientSession,
                                                            name: bool) -> None:
    long = "Ana-" + "x" * 96  # 100 characters, as `name` or (no name) as `sub`
    base = await start_server(auth_jwt_secret=SECRET)
    token = hs256(claims(name=long) if name else claims(sub=long))
    body = await post(session, base, "v1", "hi", "mallory", token=token)
    assert body.get("author") == long[:64], body


async def test_a_sub_no_ban_could_name_is_refused(start_server: StartServer, session: aiohttp.ClientSession) -> None:
    """A ban names a user by its sub (at most 256 characters): a longer sub could never be banned."""
    base = await start_server(auth_jwt_secret=SECRET)
    reply = await post_reply(session, base, "v1", token=hs256(claims(sub="u" * 257)))
    assert (reply.status, reply.body["error"]["code"]) == (401, "unauthorized")
    assert "sub is longer than 256" in reply.headers["WWW-Authenticate"]
    longest = "u" * 256  # the longest sub a token may carry: it posts, and it can be banned
    await post(session, base, "v1", token=hs256(claims(sub=longest)))
    moderator = {"Authorization": "Bearer " + hs256(claims(sub="mod", roles=["moderator"]))}
    async with session.post(f"{base}/v1/videos/v1/bans", json={"user": longest, "ttl_s": 600}, headers=moderator) as r:
        assert r.status == 201, await r.text()
    assert (await post(session, base, "v1", token=hs256(claims(sub=longest)), expect=403))["error"]["code"] == "banned"
    assert len((await history(session, base, "v1"))["comments"]) == 1
